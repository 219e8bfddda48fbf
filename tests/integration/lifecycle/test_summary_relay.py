"""Beat's relay publishes each vendor's summary once its local 08:00 has passed, and never after it was sent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from adapters.email.capture import MailCatcher
from workers.bootstrap import build_services
from workers.lifecycle import publish_due_summaries, send_summary
from workers.settings import Settings

ZONES = ["Pacific/Kiritimati", "Asia/Tokyo", "Asia/Kolkata", "Europe/Berlin", "America/New_York",
         "Pacific/Honolulu"]


def test_the_relay_publishes_a_due_summary_once_and_a_sent_one_never(database_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    due = next(zone for zone in ZONES if 8 <= now.astimezone(ZoneInfo(zone)).hour <= 22)
    early = next((zone for zone in ZONES if now.astimezone(ZoneInfo(zone)).hour < 8), None)
    tables = [("due", due)] + ([("early", early)] if early else [])
    (tmp_path / "vendors.toml").write_text("".join(f"""
[vendors.{slug}]
name = "{slug}"
summary_email = "owner@{slug}.example"
locale = "en"
timezone = "{zone}"
copecart_ipn_secret = "s"
replacement = "single_payment"
reminder_days = [3]
expire_after_days = 10
""" for slug, zone in tables), encoding="utf-8")
    published: list[tuple[str, list[Any], str]] = []
    with MailCatcher(tmp_path / "mail") as mail:
        settings = Settings(database_url=database_url, vendors_file=tmp_path / "vendors.toml",
                            smtp_url=f"smtp://127.0.0.1:{mail.port}", mail_from="dunning@dunlink.example")
        services = build_services(settings, enqueue=lambda task, args, queue: published.append((task, args, queue)))
        today = now.astimezone(ZoneInfo(due)).date().isoformat()

        assert publish_due_summaries(services, now) == 1
        assert published == [("dunlink.send_summary", ["due", today], "dunlink.email")]

        assert send_summary(services, "due", now.astimezone(ZoneInfo(due)).date()) == "sent"
        assert send_summary(services, "due", now.astimezone(ZoneInfo(due)).date()) == "already_sent"
        assert publish_due_summaries(services, now) == 0
        [summary] = mail.wait_for(1)
        assert summary.rcpt_tos == ("owner@due.example",)
        services.engine.dispose()
