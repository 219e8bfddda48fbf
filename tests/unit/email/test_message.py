"""The message as it leaves dunlink: headers, structure, and no way for webhook text to add headers."""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from adapters.email.message import compose
from adapters.email.port import InvalidAddressError, PermanentMailError
from adapters.email.render import RenderedEmail

URL = "https://pay.example/p?order=CC-1002&sig=abc="
RENDERED = RenderedEmail(subject="Ihre Zahlung für Kurs", text=f"Noch offen: 200,00 €\n{URL}\n",
                         html=f'<p>Noch offen: 200,00 €</p><a href="{URL}">{URL}</a>')


def message(**changes: object) -> EmailMessage:
    arguments: dict[str, object] = {
        "rendered": RENDERED, "case_id": "case-17", "step": "payment_link", "to_address": "anna@example.com",
        "to_name": "Anna Meier", "from_address": "dunning@acme.example", "from_name": "ACME Academy",
        "reply_to": "support@acme.example", "sent_at": datetime(2026, 9, 3, 8, 0, tzinfo=UTC),
    }
    arguments.update(changes)
    return compose(**arguments)  # type: ignore[arg-type]


def over_the_wire(msg: EmailMessage) -> EmailMessage:
    """What a server receives: the serialised bytes, parsed again."""
    received = BytesParser(policy=policy.default).parsebytes(msg.as_bytes())
    assert isinstance(received, EmailMessage)
    return received


def test_headers_name_the_vendor_and_the_case() -> None:
    received = over_the_wire(message())

    assert received["From"].addresses[0].display_name == "ACME Academy"
    assert received["From"].addresses[0].addr_spec == "dunning@acme.example"
    assert received["To"].addresses[0].addr_spec == "anna@example.com"
    assert received["Reply-To"].addresses[0].addr_spec == "support@acme.example"
    assert received["Subject"] == "Ihre Zahlung für Kurs"
    assert received["X-Dunlink-Case"] == "case-17"
    assert received["Date"].datetime == datetime(2026, 9, 3, 8, 0, tzinfo=UTC)


def test_no_reply_to_without_one() -> None:
    assert "Reply-To" not in over_the_wire(message(reply_to=None))


def test_message_id_is_the_same_for_every_attempt_of_one_step() -> None:
    first = message(sent_at=datetime(2026, 9, 3, 8, 0, tzinfo=UTC))
    again = message(sent_at=datetime(2026, 9, 3, 9, 30, tzinfo=UTC))
    reminder = message(step="reminder-1")

    assert first["Message-ID"] == again["Message-ID"] == "<dunlink.case-17.payment_link@acme.example>"
    assert reminder["Message-ID"] != first["Message-ID"]


def test_text_then_html_alternatives_in_utf8_with_link_and_amount_unaltered() -> None:
    msg = message()
    received = over_the_wire(msg)

    assert received.get_content_type() == "multipart/alternative"
    parts = list(received.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert parts[0].get_content() == RENDERED.text
    assert parts[1].get_content().rstrip("\n") == RENDERED.html
    # 8bit: even a reader of the raw source finds the link and the amount as they are.
    assert URL.encode() in msg.as_bytes()
    assert "200,00 €".encode() in msg.as_bytes()


@pytest.mark.parametrize("evil", ["Anna\r\nBcc: victim@example.com", "Anna\nBcc: victim@example.com",
                                  "Anna\rBcc: victim@example.com", "Anna\x00\x1b\u2028Bcc: victim@example.com"])
def test_line_breaks_in_names_and_subject_never_become_headers(evil: str) -> None:
    msg = message(to_name=evil, from_name=evil, rendered=RenderedEmail(evil, "t", "<p>h</p>"), case_id=evil)
    received = over_the_wire(msg)

    assert "Bcc" not in received
    assert received.keys().count("To") == 1
    assert received["To"].addresses[0].addr_spec == "anna@example.com"
    assert received["To"].addresses[0].display_name == "Anna Bcc: victim@example.com"
    assert received["From"].addresses[0].display_name == "Anna Bcc: victim@example.com"
    assert received["Subject"] == "Anna Bcc: victim@example.com"
    assert "\n" not in received["Message-ID"] and " " not in received["Message-ID"]


@pytest.mark.parametrize("address", ["anna@example.com\r\nBcc: victim@example.com", "anna example.com",
                                     "not-an-address", "anna@example.com, victim@example.com", "",
                                     "zelda[buyer]@example.com", "zelda,buyer@example.com"])
def test_a_malformed_address_is_a_permanent_error_that_does_not_repeat_it(address: str) -> None:
    with pytest.raises(InvalidAddressError) as raised:
        message(to_address=address)
    assert issubclass(InvalidAddressError, PermanentMailError)
    # The error becomes a log line and the case's reason: the buyer's address stays out of it.
    assert "zelda" not in str(raised.value) and "anna" not in str(raised.value)


@pytest.mark.parametrize("name", [
    "Anna IMPORTANT: pay at https://evil.example/pay instead Meier Bcc: victim@example.com",
    "Anna Meier-Schmidt von und zu Hohenzollern-Sigmaringen, Dr. med. dent. Prof. Tester",
    "Anna Meier-Schmidt von und zu Hohenzollern-Sigmaringen, Dr. med. dent. Prof. Müller",
])
def test_a_long_name_with_commas_or_colons_stays_one_display_name_on_the_wire(name: str) -> None:
    received = over_the_wire(message(to_name=name, from_name=name))

    for header in ("To", "From"):
        [address] = received[header].addresses
        assert address.display_name == name
    assert received["To"].addresses[0].addr_spec == "anna@example.com"


def test_a_display_name_is_bounded_so_its_header_never_folds() -> None:
    received = over_the_wire(message(to_name="Anna, " + "x" * 2000))

    [address] = received["To"].addresses
    assert address.addr_spec == "anna@example.com"
    assert address.display_name.startswith("Anna, xxx") and len(address.display_name) <= 200
