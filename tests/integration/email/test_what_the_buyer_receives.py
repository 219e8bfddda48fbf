"""What a buyer's mail server receives over a case's life: the payment link, two reminders and the final notice,
sent by ``dunlink due`` through a real SMTP server, in German from a vendor with an imprint and in English from
one without. Each names the buyer's order, the new order and the product, ends with who sends it, and no text
from a webhook or the platform writes a line or a header of its own."""

from __future__ import annotations

import contextlib
import os
import unicodedata
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.uow import SqlUnitOfWork
from adapters.email.capture import MailCatcher, ReceivedMail
from domain.case import Buyer, DunningCase
from domain.money import Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from domain.policy import ReplacementKind
from tests.support import db
from tests.support.command import due
from tests.unit.email.htmlparts import Parsed

T = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
SECRET = "buyer-receives-ipn-secret-0123"
IMPRINT = ("ACME Academy GmbH", "Musterstraße 1, 10115 Berlin", "Amtsgericht Charlottenburg, HRB 123456 B",
           "USt-IdNr.: DE123456789")
VENDORS = f'''
[vendors.acme]
name = "ACME Academy"
summary_email = "owner@acme.example"
locale = "de"
timezone = "Europe/Berlin"
reply_to = "support@acme.example"
copecart_ipn_secret = "{SECRET}"
replacement = "remaining_installments"
reminder_days = [3, 7]
expire_after_days = 14
imprint = """
{chr(10).join(IMPRINT)}
"""
support_url = "https://acme.example/hilfe"

[vendors.globex]
name = "Globex Courses"
summary_email = "billing@globex.example"
locale = "en"
timezone = "Europe/London"
reply_to = "help@globex.example"
copecart_ipn_secret = "{SECRET}"
replacement = "single_payment"
reminder_days = [3, 7]
expire_after_days = 14
'''
# A buyer who typed an instruction into the name field, and a product name with controls in it.
FIRST_NAME = "Anna\n\nIMPORTANT: pay at https://evil.example/pay instead"
LAST_NAME = "Meier\r\nBcc: victim@example.com"
PRODUCT = "Yoga\u2028IMPORTANT: call +49 30 1234\x1b\x07 course"
SEEN = {
    "de": ["Hallo Anna IMPORTANT: pay at https://evil.example/pay instead,", "Ihre Bestellnummer: CC-1001",
           "Neue Bestellnummer: CC-900001", "Produkt: Yoga IMPORTANT: call +49 30 1234 course"],
    "en": ["Hello Anna IMPORTANT: pay at https://evil.example/pay instead,", "Your order number: CC-2001",
           "New order number: CC-900002", "Product: Yoga IMPORTANT: call +49 30 1234 course"],
}


def _case(case_id: str, vendor: str, order: str, new_order: str, email: str, kind: ReplacementKind) -> DunningCase:
    """A case whose original is cancelled and whose link is due, the names and product as the platform gave them."""
    plan = InstallmentPlan("EUR", Frequency.MONTHLY, tuple(
        Installment(n, Money(5000, "EUR"), date(2026, 7 + n, 1), status)
        for n, status in enumerate([InstallmentStatus.PAID, InstallmentStatus.FAILED, InstallmentStatus.OPEN], 1)))
    case = DunningCase.open(case_id=case_id, vendor=vendor, original_order_id=order, failed_installment=2,
                            replacement_kind=kind, now=T, reminder_days=(3, 7), expire_after_days=14)
    case.plan(plan, order_vendor=case.vendor, order_status="active",
              buyer=Buyer(email, FIRST_NAME, LAST_NAME, "DE", "b-1"),
              product_id="p-1", product_name=PRODUCT, today=T.date(), now=T)
    case.replacement_created(order_id=new_order, payment_url=f"http://127.0.0.1:8090/pay/{new_order}", now=T)
    case.original_cancelled(now=T)
    return case


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def received(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[ReceivedMail]]]:
    """Every email of both cases as the mail server received it, by the buyer's address, oldest first; once per
    database (the four runs of ``dunlink due`` take a while)."""
    tmp_path = tmp_path_factory.mktemp("received")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            database_url = db.fresh_sqlite(tmp_path)
        else:
            database_url = stack.enter_context(db.fresh_postgres(request.getfixturevalue("postgres_template")))
        yield _run_a_case_life(database_url, tmp_path)


def _run_a_case_life(database_url: str, tmp_path: Path) -> dict[str, list[ReceivedMail]]:
    engine = make_engine(database_url)
    try:
        with SqlUnitOfWork(make_session_factory(engine)) as uow:
            uow.cases.add(_case("c0ffee00000000d1", "acme", "CC-1001", "CC-900001", "anna@example.com",
                                ReplacementKind.REMAINING_INSTALLMENTS))
            uow.cases.add(_case("c0ffee00000000e1", "globex", "CC-2001", "CC-900002", "emma@example.com",
                                ReplacementKind.SINGLE_PAYMENT))
            uow.commit()
    finally:
        engine.dispose()
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(VENDORS, encoding="utf-8")
    with MailCatcher(tmp_path / "mail") as catcher:
        env = {**os.environ, "DUNLINK_DATABASE_URL": database_url, "DUNLINK_VENDORS_FILE": str(vendors),
               "DUNLINK_SMTP_URL": f"smtp://127.0.0.1:{catcher.port}", "DUNLINK_MAIL_FROM": "dunning@dunlink.example",
               "DUNLINK_BROKER_URL": "redis://127.0.0.1:1/0", "DUNLINK_VENDOR_SUMMARIES": "false"}
        # The link now; a reminder on day 3 and day 7 (one email per case and run); the final notice on day 13.
        for at in (T + timedelta(minutes=1), T + timedelta(days=3, hours=1), T + timedelta(days=13, hours=1),
                   T + timedelta(days=13, hours=2)):
            assert "emails sent: 2" in due(at, env=env, cwd=tmp_path)
        mails = catcher.wait_for(8)
    return {address: [m for m in mails if m.rcpt_tos == (address,)] for address in ("anna@example.com",
                                                                                    "emma@example.com")}


def _footer(text: str) -> str:
    return text.split("\n-- \n", 1)[1]


def _no_line_of_its_own(text: str) -> None:
    assert not [line for line in text.splitlines() if line.lstrip().startswith(("IMPORTANT", "Bcc"))], text
    assert [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Zl", "Zp")] == []


@pytest.mark.parametrize(("address", "locale"), [("anna@example.com", "de"), ("emma@example.com", "en")])
def test_every_email_names_the_orders_and_the_product_and_no_webhook_text_writes_a_line(
        received: dict[str, list[ReceivedMail]], address: str, locale: str) -> None:
    mails = received[address]

    assert [m.message["Message-ID"].split(".")[2].split("@")[0] for m in mails] == [
        "send_link", "reminder_1", "reminder_2", "final_notice"]
    for mail in mails:
        for seen in SEEN[locale]:
            assert seen in mail.text, (seen, mail.text)
            assert seen in Parsed(mail.html).visible, seen
        subject = str(mail.message["Subject"])
        assert "Yoga IMPORTANT: call +49 30 1234 course" in subject
        for part in (subject, mail.text, mail.html):
            _no_line_of_its_own(part)
        # The name reached the To header as one display name, and no Bcc was added.
        assert mail.message["Bcc"] is None
        assert mail.message["To"].addresses[0].addr_spec == address
        assert mail.rcpt_tos == (address,)


def test_the_german_vendors_imprint_ends_both_parts_line_by_line(received: dict[str, list[ReceivedMail]]) -> None:
    for mail in received["anna@example.com"]:
        footer = _footer(mail.text)
        assert footer.startswith("\n".join(IMPRINT) + "\nHilfe und Kontakt: https://acme.example/hilfe\n"), footer
        html = " ".join(mail.html.split()).replace("<br> ", "<br>")
        assert "<br>".join(IMPRINT) in html
        assert 'href="https://acme.example/hilfe"' in html


def test_without_an_imprint_the_footer_names_the_vendor_and_its_address(
        received: dict[str, list[ReceivedMail]]) -> None:
    for mail in received["emma@example.com"]:
        assert _footer(mail.text).startswith("Globex Courses\nhelp@globex.example\n")
        assert 'href="mailto:help@globex.example"' in mail.html
