"""SmtpSender against a real server: credentials, trust, time limits, and what it leaves in logs."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from adapters.email.message import compose
from adapters.email.port import PermanentMailError, TransientMailError
from adapters.email.render import RenderedEmail
from adapters.email.smtp import SmtpSender
from tests.support.smtp import Certificate, MailCatcher

PASSWORD = "s3cr3t p@ss"


def email(to: str = "anna.meier@example.com") -> EmailMessage:
    return compose(rendered=RenderedEmail("Zahlung", "Text", "<p>HTML</p>"), case_id="case-9",
                   step="payment_link", to_address=to, to_name="Anna", from_address="dunning@acme.example",
                   from_name="ACME", reply_to=None)


@pytest.fixture
def starttls(tmp_path: Path, certificate: Certificate) -> Iterator[MailCatcher]:
    with MailCatcher(tmp_path, starttls_context=certificate.server_context(),
                     credentials=("acme", PASSWORD)) as catcher:
        yield catcher


def test_a_wrong_password_is_permanent(starttls: MailCatcher, certificate: Certificate) -> None:
    sender = SmtpSender.from_url(f"smtp+starttls://acme:wrong@127.0.0.1:{starttls.port}",
                                 ssl_context=certificate.client_context())

    with pytest.raises(PermanentMailError, match="535"):
        sender.send(email())
    assert starttls.messages == []


def test_an_untrusted_certificate_is_permanent(starttls: MailCatcher) -> None:
    sender = SmtpSender.from_url(f"smtp+starttls://acme:s3cr3t%20p%40ss@127.0.0.1:{starttls.port}")

    with pytest.raises(PermanentMailError, match="certificate"):
        sender.send(email())


def test_ssl_cert_file_adds_a_trusted_certificate(starttls: MailCatcher, certificate: Certificate,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))
    sender = SmtpSender.from_url(f"smtp+starttls://acme:s3cr3t%20p%40ss@127.0.0.1:{starttls.port}")

    sender.send(email())

    assert [m.message["Message-ID"] for m in starttls.messages] == ["<dunlink.case-9.payment_link@acme.example>"]
    assert starttls.messages[0].authenticated


def test_plain_smtp_to_a_starttls_only_server_is_refused_not_sent(starttls: MailCatcher) -> None:
    with pytest.raises(PermanentMailError, match="530"):
        SmtpSender.from_url(f"smtp://127.0.0.1:{starttls.port}").send(email())
    assert starttls.messages == []


def test_a_server_that_never_answers_times_out_as_transient() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts connections into the backlog but never greets
        sender = SmtpSender.from_url(f"smtp://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)

        with pytest.raises(TransientMailError, match=r"[Tt]imeout|timed out"):
            sender.send(email())


def test_logs_hold_neither_the_password_nor_the_buyer_address(
        starttls: MailCatcher, certificate: Certificate, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = SmtpSender.from_url(f"smtp+starttls://acme:s3cr3t%20p%40ss@127.0.0.1:{starttls.port}",
                               ssl_context=certificate.client_context())
    bad = SmtpSender.from_url(f"smtp+starttls://acme:s3cr3t%20p%40ss-not@127.0.0.1:{starttls.port}",
                              ssl_context=certificate.client_context())

    good.send(email())
    with pytest.raises(PermanentMailError) as refused:
        bad.send(email())

    # Our records only: the receiving server (the catcher) logs its own side of the dialogue.
    ours = [r for r in caplog.records if r.name.startswith("adapters.")]
    assert len(ours) == 2
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in ours)
    assert "a***@example.com" in logged
    for secret in (PASSWORD, "s3cr3t", "anna.meier@example.com"):
        assert secret not in logged
        assert secret not in repr(good)
        assert secret not in str(refused.value)


def test_url_errors_do_not_echo_the_password() -> None:
    for url in ("http://u:hunter2@host", "smtps://u:hunter2@host:x", "smtp://u:hunter2@host:25"):
        with pytest.raises(ValueError, match="DUNLINK_SMTP_URL") as error:
            SmtpSender.from_url(url)
        assert "hunter2" not in str(error.value)


def test_default_ports_follow_the_scheme() -> None:
    assert SmtpSender.from_url("smtps://u:p@mail.example").port == 465
    assert SmtpSender.from_url("smtp+starttls://u:p@mail.example").port == 587
    assert SmtpSender.from_url("smtp://127.0.0.1:1025").port == 1025
