"""Why each case needs a person, as a German vendor reads it in the summary sent by ``dunlink due``: in German,
amounts as Germans write them, and the raw detail only in ``dunlink cases show``."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.uow import SqlUnitOfWork
from adapters.email.capture import MailCatcher
from domain.case import Buyer, DunningCase, RetryPolicy, Step
from domain.money import Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from domain.policy import ReplacementKind
from tests.support.command import due
from tests.unit.email.htmlparts import Parsed

NOW = datetime(2026, 11, 26, 7, 30, tzinfo=UTC)  # 08:30 in Berlin: the summary is due
SECRET = "summary-reasons-ipn-secret-0123"
VENDORS = f"""
[vendors.acme]
name = "ACME Academy"
summary_email = "owner@acme.example"
locale = "de"
timezone = "Europe/Berlin"
copecart_ipn_secret = "{SECRET}"
replacement = "remaining_installments"
reminder_days = [3, 7]
expire_after_days = 14
"""
DUNLINK = Path(sys.executable).parent / "dunlink"


def _planned(case_id: str, order: str, at: datetime) -> DunningCase:
    plan = InstallmentPlan("EUR", Frequency.MONTHLY, tuple(
        Installment(n, Money(4900, "EUR"), date(2026, 8 + n, 1), status)
        for n, status in enumerate([InstallmentStatus.PAID, InstallmentStatus.FAILED, InstallmentStatus.OPEN], 1)))
    case = DunningCase.open(case_id=case_id, vendor="acme", original_order_id=order, failed_installment=2,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=at)
    case.plan(plan, order_vendor=case.vendor, order_status="active",
              buyer=Buyer("anna@example.com", "Anna", "Meier"), product_id="p-1",
              product_name="Yoga", today=at.date(), now=at)
    return case


def _seed(url: str) -> None:
    """Three cases for a person: paid twice (49.00 EUR), a replacement the platform refused, and one handed over
    before reasons had codes."""
    start = NOW - timedelta(days=2)
    twice = _planned("c0ffee00000000a1", "CC-1001", start)
    twice.replacement_created(order_id="CC-900001", payment_url="http://127.0.0.1:8090/pay/CC-900001", now=start)
    twice.original_paid(installment=2, now=start + timedelta(minutes=1))
    twice.replacement_paid(amount=Money(4900, "EUR"), now=start + timedelta(minutes=2))
    refused = _planned("c0ffee00000000a2", "CC-1002", start + timedelta(hours=1))
    refused.step_failed(Step.CREATE_REPLACEMENT, error="Rejected: 422 product is archived", transient=False,
                        now=start + timedelta(hours=1, minutes=1), policy=RetryPolicy(), jitter=0.0)
    older = _planned("c0ffee00000000a3", "CC-1003", start + timedelta(hours=2))
    older.step_failed(Step.CREATE_REPLACEMENT, error="Rejected: 409 conflict", transient=False,
                      now=start + timedelta(hours=2, minutes=1), policy=RetryPolicy(), jitter=0.0)
    older.reason_code, older.reason_params = None, {}  # as a case stored before revision 0004
    engine = make_engine(url)
    try:
        with SqlUnitOfWork(make_session_factory(engine)) as uow:
            for case in (twice, refused, older):
                uow.cases.add(case)
            uow.commit()
    finally:
        engine.dispose()


def test_the_german_summary_words_each_reason_and_amount_and_cases_show_keeps_the_detail(
        database_url: str, tmp_path: Path) -> None:
    _seed(database_url)
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(VENDORS, encoding="utf-8")
    with MailCatcher(tmp_path / "mail") as catcher:
        env = {**os.environ, "DUNLINK_DATABASE_URL": database_url, "DUNLINK_VENDORS_FILE": str(vendors),
               "DUNLINK_SMTP_URL": f"smtp://127.0.0.1:{catcher.port}", "DUNLINK_MAIL_FROM": "dunning@dunlink.example",
               "DUNLINK_BROKER_URL": "redis://127.0.0.1:1/0"}
        assert "summaries sent: 1" in due(NOW, env=env, cwd=tmp_path)
        [mail] = catcher.wait_for(1)

    for part in (" ".join(mail.text.split()), Parsed(mail.html).visible):
        assert "Manuell zu klären (3)" in part
        assert ("Warum: Der Käufer hat die ursprüngliche und die neue Bestellung bezahlt (49,00 € auf die neue "
                "Bestellung).") in part
        assert "Warum: Die Plattform hat die neue Bestellung abgelehnt" in part
        assert "Warum: Dieser Fall ist manuell zu klären: siehe 'dunlink cases show c0ffee00000000a3'." in part
        for raw in ("49.00", "EUR", "422", "product is archived", "paid twice", "create_replacement", "paid_twice"):
            assert raw not in part, raw

    shown = subprocess.run([str(DUNLINK), "cases", "show", "c0ffee00000000a2"], env=env, capture_output=True,
                           text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "create_replacement failed: Rejected: 422 product is archived" in shown.stdout
    assert "reason code     create_replacement_failed  attempts=1" in shown.stdout
