"""The in-memory sender fails on request the way a server would, for the retry paths of unit tests."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from adapters.email.memory import MemoryMailSender
from adapters.email.port import PermanentMailError, TransientMailError


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["To"] = "anna@example.com"
    msg["Subject"] = "x"
    msg.set_content("x")
    return msg


def test_queued_failures_come_first_then_sending_works() -> None:
    sender = MemoryMailSender()
    sender.fail_next(TransientMailError("421 busy"), PermanentMailError("554 no"))

    with pytest.raises(TransientMailError):
        sender.send(message())
    with pytest.raises(PermanentMailError):
        sender.send(message())
    sender.send(message())

    assert [m["To"] for m in sender.sent] == ["anna@example.com"]


def test_what_was_sent_cannot_be_changed_afterwards() -> None:
    sender = MemoryMailSender()
    msg = message()
    sender.send(msg)
    msg.replace_header("Subject", "changed")

    assert sender.sent[0]["Subject"] == "x"
