"""Beat's relay publishes each vendor's summary once its local 08:00 has passed, and never after it was sent."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.email.capture import MailCatcher
from dunlink.config.settings import Settings
from dunlink.runtime.bootstrap import build_services
from dunlink.usecases.lifecycle import publish_due_summaries, send_summary

# 22:30 UTC: 23:30 on Thursday 26 November in Berlin, past its 08:00; 07:30 on Friday 27 November in Tokyo,
# not yet. An hour later Tokyo is past 08:00 on its Friday, and Berlin's Friday has begun but is not yet due.
START = datetime(2026, 11, 26, 22, 30, tzinfo=UTC)
ZONES = {"berlin": "Europe/Berlin", "tokyo": "Asia/Tokyo"}


class Clock:
    """The time the relay and the sender read, moved on by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, by: timedelta) -> None:
        self.now += by


def test_the_relay_publishes_a_due_summary_once_and_a_sent_one_never(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "vendors.toml").write_text("".join(f"""
[vendors.{slug}]
name = "{slug}"
summary_email = "owner@{slug}.example"
locale = "en"
timezone = "{zone}"
copecart_ipn_secret = "summary-test-ipn-secret-3f7a"
replacement = "single_payment"
reminder_days = [3]
expire_after_days = 10
""" for slug, zone in ZONES.items()), encoding="utf-8")
    published: list[tuple[str, list[Any], str]] = []
    clock = Clock(START)
    with MailCatcher(tmp_path / "mail") as mail:
        settings = Settings(database_url=database_url, vendors_file=tmp_path / "vendors.toml",
                            smtp_url=f"smtp://127.0.0.1:{mail.port}", mail_from="dunning@dunlink.example")
        services = dataclasses.replace(
            build_services(settings, enqueue=lambda task, args, queue: published.append((task, args, queue))),
            clock=clock)

        def relay() -> int:  # as beat's task runs it: at the services' own time
            return publish_due_summaries(services, services.clock())

        try:
            # Berlin is due for its Thursday; Tokyo, already on Friday, is not before its 08:00.
            assert relay() == 1
            assert published == [("dunlink.send_summary", ["berlin", "2026-11-26"], "dunlink.email")]
            assert send_summary(services, "berlin", date(2026, 11, 26)) == "sent"
            assert send_summary(services, "berlin", date(2026, 11, 26)) == "already_sent"
            assert relay() == 0

            # An hour on: Tokyo's Friday summary is due; Berlin's Friday is an hour old, before its 08:00.
            clock.advance(timedelta(hours=1))
            published.clear()
            assert relay() == 1
            assert published == [("dunlink.send_summary", ["tokyo", "2026-11-27"], "dunlink.email")]
            assert send_summary(services, "tokyo", date(2026, 11, 27)) == "sent"
            assert relay() == 0

            berlin, tokyo = mail.wait_for(2)
        finally:
            services.engine.dispose()

    assert (berlin.rcpt_tos, tokyo.rcpt_tos) == (("owner@berlin.example",), ("owner@tokyo.example",))
    # Each reports the vendor's local day before the one it was due on.
    assert berlin.message["Subject"] == "Dunning summary for November 25, 2026: €0.00 recovered"
    assert tokyo.message["Subject"] == "Dunning summary for November 26, 2026: €0.00 recovered"
    assert berlin.message["Date"].datetime == START
    assert tokyo.message["Date"].datetime == START + timedelta(hours=1)
    assert len(mail.messages) == 2
