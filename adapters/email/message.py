"""Composing the MIME message for a rendered email.

Names and subjects carry text from webhooks, so nothing reaches a header unsanitised: control
characters become spaces and display names go through :class:`email.headerregistry.Address`, which
quotes and encodes them. The ``Message-ID`` is derived from the case and the step only, so however often
a send is attempted, mail clients and servers see one message.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from adapters.email.port import InvalidAddressError
from adapters.email.render import RenderedEmail

_MAX_8BIT_LINE = 900
# Headers stay on one line up to SMTP's limit of 998 octets. Python's folder (policy.default folds at 78) drops the
# quotes around a long display name with a comma or colon in it, which the recipient's client then reads as two
# addresses or a group ("Meier-Schmidt, Dr. ..."); a bounded display name never reaches the limit.
_POLICY = policy.default.clone(max_line_length=998)
_DISPLAY_NAME_MAX = 200
_BLANKS = re.compile(r"\s+")
# Characters allowed in the dot-atom of a Message-ID (RFC 5322 atext plus dots).
_NOT_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")


def header_text(value: str) -> str:
    """One line of printable text: CR, LF, NUL, other control and line/paragraph separators become spaces.

    ``=?`` is broken up too: an RFC 2047 encoded word in a name from a webhook would otherwise be decoded
    by the email library into the very line breaks removed here, and write a header of its own.
    """
    cleaned = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in value)
    return _BLANKS.sub(" ", cleaned).strip().replace("=?", "= ?")


def mailbox(name: str, address: str) -> Address:
    """A header mailbox; an address that is not one plain ``local@domain`` is refused, never repaired."""
    if address != address.strip() or any(unicodedata.category(c) in ("Cc", "Zl", "Zp", "Zs") for c in address):
        raise InvalidAddressError("address contains spaces or control characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddressError("address must look like local@domain")
    display = header_text(name)
    if len(display) > _DISPLAY_NAME_MAX:
        display = display[: _DISPLAY_NAME_MAX - 1].rstrip() + "…"
    try:
        return Address(display_name=display, addr_spec=address)
    except (ValueError, IndexError, HeaderParseError):
        # Not the parser's words: they quote the address, and this message goes to logs and the case's reason.
        raise InvalidAddressError("malformed address: not one plain local@domain") from None


def message_id(*, case_id: str, step: str, from_address: str) -> str:
    """The same id for the same (case, step, sending domain), so a retried send is one message."""
    domain = _NOT_ATEXT.sub("-", from_address.rpartition("@")[2]) or "localhost"
    left = ".".join(_NOT_ATEXT.sub("-", part) or "-" for part in ("dunlink", case_id, step))
    return f"<{left}@{domain}>"


def compose(
    *,
    rendered: RenderedEmail,
    case_id: str,
    step: str,
    to_address: str,
    to_name: str,
    from_address: str,
    from_name: str,
    reply_to: str | None,
    sent_at: datetime | None = None,
) -> EmailMessage:
    """Build the multipart/alternative message, plain text first so clients prefer the HTML part."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = mailbox(from_name, from_address)
    message["To"] = mailbox(to_name, to_address)
    if reply_to:
        message["Reply-To"] = mailbox("", reply_to)
    message["Subject"] = header_text(rendered.subject)
    message["Date"] = format_datetime(sent_at or datetime.now(UTC))
    message["Message-ID"] = message_id(case_id=case_id, step=step, from_address=from_address)
    message["X-Dunlink-Case"] = header_text(case_id)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text, subtype="plain", charset="utf-8", cte=_transfer_encoding(rendered.text))
    message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte=_transfer_encoding(rendered.html))
    return message


def _transfer_encoding(body: str) -> str:
    """8bit keeps links and amounts byte-for-byte in the source; quoted-printable only for overlong lines.

    Quoted-printable would write ``=`` in a URL as ``=3D`` and fold long lines inside it; SMTP allows
    998 octets per line, so a line near that (a pasted essay as a product name) falls back to it.
    """
    longest = max((len(line.encode("utf-8")) for line in body.splitlines()), default=0)
    return "8bit" if longest <= _MAX_8BIT_LINE else "quoted-printable"
