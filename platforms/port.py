"""What every platform's package gives the pipeline: its webhook verified and read into domain events.

A vendor's ``platform`` in the vendors file selects the package (``platforms.registry``); the HTTP app and the
use cases go through this port alone, so a new platform is a new package, not a change to either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from domain.events import PaymentEvent


@dataclass(frozen=True, slots=True)
class Received:
    """A delivery read: the event, its deduplication key, and the text stored for the workers to read again."""

    event: PaymentEvent
    dedup_key: str
    stored: str


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    """A delivery the platform sends to test the webhook URL: answered ``OK``, never stored."""


class Unreadable(ValueError):
    """The body is not a delivery of this platform (not the encoding, not the shape, a field missing or
    malformed): a ``400`` with this short text, nothing stored."""


class WebhookPlatform(Protocol):
    name: str

    def verify(self, secret: str, body: bytes, headers: Mapping[str, str]) -> bool:
        """The delivery was signed with the vendor's ``secret``, checked in constant time."""
        ...

    def receive(self, body: bytes) -> Received | ConnectionCheck:
        """Read a verified delivery; raises :class:`Unreadable`."""
        ...

    def event_of(self, stored: str) -> PaymentEvent:
        """The event of a stored delivery, as :meth:`receive` read it (in the worker that acts on it)."""
        ...
