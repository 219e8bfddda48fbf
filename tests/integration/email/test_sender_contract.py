"""One contract for every mail sender: what arrives, and which failures say "retry" or "give up".

Run against SmtpSender talking to a real aiosmtpd server (plain, STARTTLS with AUTH, SMTPS with AUTH)
and against MemoryMailSender, so unit tests that use the memory sender can trust it behaves the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from email.message import EmailMessage
from pathlib import Path

import pytest

from adapters.email.memory import MemoryMailSender
from adapters.email.message import compose
from adapters.email.port import MailSender, PermanentMailError, TransientMailError
from adapters.email.render import EmailRenderer, PaymentLinkContext, ScheduleLine
from adapters.email.smtp import SmtpSender
from domain.money import Money
from tests.support.smtp import Certificate, MailCatcher, closed_port

USER, PASSWORD = "dunning@acme.example", "p@ss:w/rd%"
QUOTED = "dunning%40acme.example:p%40ss%3Aw%2Frd%25"


@dataclass
class World:
    """A sender and a way to see what its server received."""

    sender: MailSender
    received: Callable[[], list[EmailMessage]]
    down: MailSender  # the same kind of sender, with nobody answering


WorldFactory = Callable[[Mapping[str, str]], World]


def _memory(stack: contextlib.ExitStack, folder: Path, cert: Certificate) -> WorldFactory:
    def make(refuse: Mapping[str, str]) -> World:
        sender = MemoryMailSender(refuse=refuse)
        return World(sender, lambda: list(sender.sent), MemoryMailSender(down=True))
    return make


def _smtp(scheme: str, *, starttls: bool = False, tls: bool = False, auth: bool = False) -> Callable[
        [contextlib.ExitStack, Path, Certificate], WorldFactory]:
    def factory(stack: contextlib.ExitStack, folder: Path, cert: Certificate) -> WorldFactory:
        def make(refuse: Mapping[str, str]) -> World:
            catcher = stack.enter_context(MailCatcher(
                folder, starttls_context=cert.server_context() if starttls else None,
                tls_context=cert.server_context() if tls else None,
                credentials=(USER, PASSWORD) if auth else None, refuse=refuse))
            userinfo = f"{QUOTED}@" if auth else ""
            context = cert.client_context() if (starttls or tls) else None
            sender = SmtpSender.from_url(f"{scheme}://{userinfo}127.0.0.1:{catcher.port}", ssl_context=context)
            down = SmtpSender.from_url(f"{scheme}://{userinfo}127.0.0.1:{closed_port()}", ssl_context=context)

            def received() -> list[EmailMessage]:
                mails = catcher.messages
                assert all(m.authenticated == auth for m in mails)
                assert all("BODY=8BITMIME" in m.mail_options for m in mails)
                return [m.message for m in mails]
            return World(sender, received, down)
        return make
    return factory


KINDS = {
    "memory": _memory,
    "smtp-plain": _smtp("smtp"),
    "smtp-starttls-auth": _smtp("smtp+starttls", starttls=True, auth=True),
    "smtps-auth": _smtp("smtps", tls=True, auth=True),
}


@pytest.fixture(params=list(KINDS))
def world(request: pytest.FixtureRequest, tmp_path: Path, certificate: Certificate) -> Iterator[WorldFactory]:
    with contextlib.ExitStack() as stack:
        yield KINDS[request.param](stack, tmp_path / "mail", certificate)


@pytest.fixture(scope="module")
def payment_email() -> Callable[[str], EmailMessage]:
    renderer = EmailRenderer()
    ctx = PaymentLinkContext(
        case_id="case-17", locale="de", vendor_name="ACME Academy", buyer_first_name="<b>x</b>",
        buyer_last_name="Meier", product_name="Coaching Program", outstanding=Money(20000, "EUR"),
        installments_left=2, schedule=(ScheduleLine(1, Money(10000, "EUR"), date(2026, 10, 1)),
                                       ScheduleLine(2, Money(10000, "EUR"), date(2026, 11, 1))),
        payment_url="http://127.0.0.1:8090/pay/CC-1002", reply_to="support@acme.example", order_id="CC-1001")
    rendered = renderer.payment_link(ctx)

    def build(to: str) -> EmailMessage:
        return compose(rendered=rendered, case_id="case-17", step="payment_link", to_address=to,
                       to_name="Anna Meier", from_address="dunning@acme.example", from_name="ACME Academy",
                       reply_to="support@acme.example")
    return build


def test_a_sent_message_arrives_intact(world: WorldFactory, payment_email: Callable[[str], EmailMessage]) -> None:
    w = world({})
    sent = payment_email("anna@example.com")

    w.sender.send(sent)

    [got] = w.received()
    for header in ("From", "To", "Reply-To", "Subject", "Message-ID", "X-Dunlink-Case", "Date"):
        assert got[header] == sent[header]
    assert got["From"].addresses[0].display_name == "ACME Academy"
    text, html = (got.get_body((kind,)) for kind in ("plain", "html"))
    assert text is not None and html is not None
    for part in (text.get_content(), html.get_content()):
        assert "200,00 €" in part
        assert "http://127.0.0.1:8090/pay/CC-1002" in part
    assert "&lt;b&gt;x&lt;/b&gt;" in html.get_content()


def test_a_refused_recipient_is_permanent(world: WorldFactory,
                                          payment_email: Callable[[str], EmailMessage]) -> None:
    w = world({"gone@example.com": "550 5.1.1 mailbox unavailable"})

    with pytest.raises(PermanentMailError, match="550"):
        w.sender.send(payment_email("gone@example.com"))
    assert w.received() == []


def test_a_temporary_refusal_is_transient(world: WorldFactory,
                                          payment_email: Callable[[str], EmailMessage]) -> None:
    w = world({"busy@example.com": "451 4.3.0 try again later"})

    with pytest.raises(TransientMailError, match="451"):
        w.sender.send(payment_email("busy@example.com"))
    assert w.received() == []


def test_a_server_that_is_down_is_transient(world: WorldFactory,
                                            payment_email: Callable[[str], EmailMessage]) -> None:
    w = world({})

    with pytest.raises(TransientMailError):
        w.down.send(payment_email("anna@example.com"))
