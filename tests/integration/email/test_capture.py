"""The mail catcher keeps what a buyer would get, as files someone can open."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from adapters.email.message import compose
from adapters.email.render import RenderedEmail
from adapters.email.smtp import SmtpSender
from tests.support.smtp import MailCatcher


def send(catcher: MailCatcher, subject: str, case_id: str) -> None:
    rendered = RenderedEmail(subject, "Noch offen: 200,00 €", "<p>Noch offen: 200,00 €</p>")
    message = compose(rendered=rendered, case_id=case_id, step="payment_link", to_address="anna@example.com",
                      to_name="Anna", from_address="dunning@localhost", from_name="ACME", reply_to=None)
    SmtpSender.from_url(f"smtp://127.0.0.1:{catcher.port}").send(message)


def test_every_message_is_saved_as_eml_and_html(mail_folder: Path) -> None:
    with MailCatcher(mail_folder) as catcher:
        send(catcher, "Ihre Zahlung für Kurs", "case-1")
        send(catcher, "Second one", "case-2")
        first, second = catcher.wait_for(2, timeout=5)

    assert sorted(p.name for p in mail_folder.iterdir()) == [
        "0001-ihre-zahlung-fur-kurs.eml", "0001-ihre-zahlung-fur-kurs.html",
        "0002-second-one.eml", "0002-second-one.html"]
    saved = BytesParser(policy=policy.default).parsebytes(first.eml_path.read_bytes())
    assert saved["X-Dunlink-Case"] == "case-1"
    assert first.html_path is not None
    assert first.html_path.read_text(encoding="utf-8").strip() == "<p>Noch offen: 200,00 €</p>"
    assert first.mail_from == "dunning@localhost"
    assert first.rcpt_tos == ("anna@example.com",)
    assert second.text.strip() == "Noch offen: 200,00 €"


def test_waiting_for_mail_that_never_comes_is_bounded(mail_folder: Path) -> None:
    with MailCatcher(mail_folder) as catcher, pytest.raises(TimeoutError, match="expected 1"):
        catcher.wait_for(1, timeout=0.1)
