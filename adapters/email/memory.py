"""An in-memory mail sender for unit tests and dry runs: keeps what it was given, fails when told to."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import getaddresses

from adapters.email.port import MailError, TransientMailError, error_for_reply


class MemoryMailSender:
    """Satisfies :class:`~adapters.email.port.MailSender` like a server would, without a network.

    ``refuse`` maps a recipient address to an SMTP reply (``"550 5.1.1 no such user"``), classified by
    the same rule as real replies; ``down`` makes every send fail as a refused connection would;
    :meth:`fail_next` queues errors to raise on the next sends, for retry paths.
    """

    def __init__(self, *, refuse: Mapping[str, str] | None = None, down: bool = False) -> None:
        self.sent: list[EmailMessage] = []
        self.refuse = dict(refuse or {})
        self.down = down
        self._failures: list[MailError] = []

    def fail_next(self, *errors: MailError) -> None:
        """Raise ``errors`` on the next sends, one per call, before any message is kept."""
        self._failures.extend(errors)

    def send(self, message: EmailMessage) -> None:
        if self._failures:
            raise self._failures.pop(0)
        if self.down:
            raise TransientMailError("connection refused (memory sender is down)")
        for _, address in getaddresses(message.get_all("To", []) + message.get_all("Cc", [])):
            reply = self.refuse.get(address)
            if reply is not None:
                code, _, text = reply.partition(" ")
                raise error_for_reply(int(code), f"{address}: {text}")
        # A copy, so a caller that reuses the message object cannot rewrite what was "sent".
        self.sent.append(copy.deepcopy(message))
