"""A vendor summary is sent once however many workers try, and a failing one is tried again after a wait
that grows, not on every wake-up of the relay."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from adapters.email.capture import MailCatcher
from dunlink.config.settings import Settings
from dunlink.runtime.bootstrap import Services, build_services
from dunlink.usecases.lifecycle import SUMMARY_RETRY, publish_due_summaries, send_summary
from tests.support.smtp import closed_port
from tests.support.stack import SECRET
from tests.support.vendors import vendors_toml

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)  # 10:00 in Berlin: acme's summary of the day is due
DAY = date(2026, 11, 26)


class SlowMailServer:
    """An SMTP server that holds each message in DATA until the test lets it through."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.received: list[bytes] = []
        self.controller = Controller(self, hostname="127.0.0.1", port=closed_port())

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 5)
        self.received.append(envelope.original_content)
        return "250 Message accepted for delivery"


@pytest.fixture
def slow_server() -> Iterator[SlowMailServer]:
    server = SlowMailServer()
    server.controller.start()
    yield server
    server.release.set()
    server.controller.stop()


def _services(database_url: str, tmp_path: Path, smtp_port: int) -> Services:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": SECRET}), encoding="utf-8")
    settings = Settings(database_url=database_url, vendors_file=vendors, smtp_url=f"smtp://127.0.0.1:{smtp_port}",
                        mail_from="dunning@dunlink.example")
    return dataclasses.replace(build_services(settings, enqueue=lambda *_: None), clock=lambda: NOW)


def test_two_workers_and_a_slow_mail_server_send_the_summary_once(database_url: str, tmp_path: Path,
                                                                    slow_server: SlowMailServer) -> None:
    port = slow_server.controller.port
    first, second = _services(database_url, tmp_path, port), _services(database_url, tmp_path, port)
    outcomes: dict[str, str] = {}
    sending = threading.Thread(target=lambda: outcomes.update(first=send_summary(first, "acme", DAY)))
    try:
        sending.start()
        assert slow_server.arrived.wait(10), "the first worker's summary never reached the mail server"
        outcomes["second"] = send_summary(second, "acme", DAY)  # while the first is still sending
        slow_server.release.set()
        sending.join(30)
        outcomes["third"] = send_summary(second, "acme", DAY)
    finally:
        first.engine.dispose()
        second.engine.dispose()
    assert outcomes == {"first": "sent", "second": "not_now", "third": "already_sent"}
    assert len(slow_server.received) == 1


def test_a_summary_that_cannot_be_sent_is_tried_again_after_a_growing_wait(database_url: str,
                                                                             tmp_path: Path) -> None:
    with MailCatcher(tmp_path / "mail", refuse={"owner@acme.example": "451 4.3.0 try again later"}) as mail:
        now = [NOW]
        services = dataclasses.replace(_services(database_url, tmp_path, mail.port), clock=lambda: now[0])
        published: list[Any] = []
        services.enqueue = lambda task, args, queue: published.append(args)
        try:
            waits: list[timedelta] = []
            for attempt in (1, 2, 3):
                assert send_summary(services, "acme", DAY) == "retry_later"
                with services.uow() as uow:
                    row = uow.summaries.get("acme", DAY)
                    assert row is not None
                    assert (row.attempts, row.status, row.lease_until) == (attempt, "retrying", None)
                    assert row.error == "TransientMailError: 451 recipient refused: 4.3.0 try again later"
                    retry_at = row.next_attempt_at
                assert retry_at is not None
                waits.append(retry_at - now[0])
                # Until then neither the relay nor a worker woken some other way tries it.
                now[0] = retry_at - timedelta(seconds=1)
                assert publish_due_summaries(services, now[0]) == 0
                assert send_summary(services, "acme", DAY) == "not_now"
                now[0] = retry_at
            for attempt, wait in enumerate(waits, start=1):
                ceiling = SUMMARY_RETRY.base * 2 ** (attempt - 1)
                assert ceiling / 2 <= wait < ceiling, (attempt, wait)

            mail.refuse.clear()
            assert publish_due_summaries(services, now[0]) == 1
            assert published == [["acme", "2026-11-26"]]
            assert send_summary(services, "acme", DAY) == "sent"
            assert len(mail.wait_for(1)) == 1
            assert publish_due_summaries(services, now[0] + timedelta(hours=1)) == 0
        finally:
            services.engine.dispose()


def test_a_summary_the_mail_server_refuses_for_good_is_tried_again_an_hour_later(database_url: str,
                                                                                   tmp_path: Path) -> None:
    with MailCatcher(tmp_path / "mail", refuse={"owner@acme.example": "550 5.1.1 mailbox unavailable"}) as mail:
        now = [NOW]
        services = dataclasses.replace(_services(database_url, tmp_path, mail.port), clock=lambda: now[0])
        try:
            assert send_summary(services, "acme", DAY) == "failed"
            with services.uow() as uow:
                row = uow.summaries.get("acme", DAY)
                assert row is not None
                assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 1, NOW + SUMMARY_RETRY.cap)
            now[0] = NOW + timedelta(minutes=59)
            assert publish_due_summaries(services, now[0]) == 0
            assert send_summary(services, "acme", DAY) == "not_now"
            mail.refuse.clear()  # the vendor's address was put right
            now[0] = NOW + SUMMARY_RETRY.cap
            assert send_summary(services, "acme", DAY) == "sent"
            assert len(mail.wait_for(1)) == 1
        finally:
            services.engine.dispose()
