"""The port every mail sender satisfies, and the errors a send may end in.

The pipeline decides between "try again later" and "give the case to a person" from the error class
alone, so each sender translates its own failures into this tree at the boundary::

    MailError                       anything that kept a message from being handed over
    ├── TransientMailError          may succeed later: retry with backoff, bounded
    │                               (connection refused or reset, timeout, SMTP 4xx such as 421 or 451)
    └── PermanentMailError          will fail the same way again: record it on the case for a person
        │                           (SMTP 5xx such as 550 recipient refused or 535 auth failed,
        │                            TLS certificate not trusted, server lacks STARTTLS or AUTH)
        └── InvalidAddressError     an address that cannot be put in a header at all
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol


class MailError(Exception):
    """A message was not handed over to the mail server."""


class TransientMailError(MailError):
    """The same message may go through later; the caller retries with backoff."""


class PermanentMailError(MailError):
    """Retrying will not help; a person has to look at the case."""


class InvalidAddressError(PermanentMailError):
    """An address is malformed or smuggles control characters; no message can be built for it."""


class MailSender(Protocol):
    """Hands a composed message to a mail server.

    One method, so the pipeline can run against SMTP in production and a list in memory in unit tests.
    ``send`` returns once the server accepted the message for every recipient, or raises a
    :class:`MailError`.
    """

    def send(self, message: EmailMessage) -> None: ...


def error_for_reply(code: int, reply: str) -> MailError:
    """Classify an SMTP reply code: 4xx is a temporary refusal (RFC 5321 §4.2.1), anything else is not."""
    text = f"{code} {reply}".strip()
    if 400 <= code < 500:
        return TransientMailError(text)
    return PermanentMailError(text)
