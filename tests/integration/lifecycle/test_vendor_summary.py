"""The vendors' daily summary emails, sent by ``dunlink due``, checked against figures computed here from the
seeded cases, independently of dunlink's own summary code."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.uow import SqlUnitOfWork
from adapters.email.capture import MailCatcher, ReceivedMail
from domain.case import CaseState, DunningCase
from domain.policy import ReplacementKind
from tests.support.command import due

NOW = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)
VENDORS = {"london": "Europe/London", "newyork": "America/New_York", "tokyo": "Asia/Tokyo"}
TABLE = """
[vendors.{slug}]
name = "{slug} school"
summary_email = "owner@{slug}.example"
locale = "en"
timezone = "{zone}"
copecart_ipn_secret = "summary-test-ipn-secret-3f7a"
replacement = "single_payment"
reminder_days = [3, 7]
expire_after_days = 14
"""


@dataclass(frozen=True)
class Seeded:
    vendor: str
    state: CaseState
    opened_at: datetime
    link_sent_at: datetime | None
    closed_at: datetime | None
    recovered_minor: int


def _seed(url: str) -> list[Seeded]:
    """200 cases over 40 days in every end and waiting state, across three vendors in three time zones."""
    rng = random.Random(7)
    engine = make_engine(url)
    seeded: list[Seeded] = []
    states = [CaseState.AWAITING_PAYMENT, CaseState.RECOVERED, CaseState.LOST, CaseState.NEEDS_PERSON,
              CaseState.RESOLVED]
    try:
        with SqlUnitOfWork(make_session_factory(engine)) as uow:
            for n in range(200):
                vendor = list(VENDORS)[n % 3]
                opened = NOW - timedelta(days=40) + timedelta(seconds=rng.randrange(40 * 86400))
                state = rng.choice(states)
                sent = opened + timedelta(minutes=1)
                closed = None
                if state in (CaseState.RECOVERED, CaseState.LOST, CaseState.RESOLVED):
                    closed = min(sent + timedelta(hours=rng.randrange(1, 24 * 12)), NOW - timedelta(minutes=5))
                amount = rng.randrange(1000, 60000) if state is CaseState.RECOVERED else 0
                case = DunningCase(
                    id=f"case{n:04d}", vendor=vendor, original_order_id=f"CC-{n}", failed_installment=2,
                    replacement_kind=ReplacementKind.SINGLE_PAYMENT, state=state, opened_at=opened,
                    updated_at=closed or sent, currency="EUR", outstanding_minor=max(amount, 5000),
                    link_sent_at=sent, recovered_minor=amount, closed_at=closed,
                    reason="cancel_original failed: Rejected: 422" if state is CaseState.NEEDS_PERSON else None)
                uow.cases.add(case)
                seeded.append(Seeded(vendor, state, opened, sent, closed, amount))
            uow.commit()
    finally:
        engine.dispose()
    return seeded


def _expected(rows: list[Seeded], vendor: str) -> dict[str, list[str]]:
    zone = ZoneInfo(VENDORS[vendor])
    today = NOW.astimezone(zone).date()

    def midnight(day: date) -> datetime:
        return datetime.combine(day, time(), tzinfo=zone)

    def column(start: datetime, end: datetime) -> list[str]:
        mine = [r for r in rows if r.vendor == vendor]
        inside = [r for r in mine if r.closed_at is not None and start <= r.closed_at < end]
        recovered = [r for r in inside if r.state is CaseState.RECOVERED]
        lost = [r for r in inside if r.state is CaseState.LOST]
        cents = sum(r.recovered_minor for r in recovered)
        ended = len(recovered) + len(lost)
        return [str(sum(1 for r in mine if start <= r.opened_at < end)),
                str(sum(1 for r in mine if r.link_sent_at and start <= r.link_sent_at < end)),
                str(len(recovered)), f"€{cents // 100:,}.{cents % 100:02d}", str(len(lost)),
                f"{len(recovered) / ended * 100:.1f}%" if ended else "–"]

    yesterday = column(midnight(today - timedelta(days=1)), midnight(today))
    month = column(midnight(today - timedelta(days=30)), midnight(today))
    labels = ["Cases opened", "Payment links sent", "Recovered", "Amount recovered", "Lost", "Recovery rate"]
    figures = {label: [y, m] for label, y, m in zip(labels, yesterday, month, strict=True)}
    mine = [r for r in rows if r.vendor == vendor]
    figures["waiting"] = [str(sum(1 for r in mine if r.state is CaseState.AWAITING_PAYMENT))]
    figures["needs person"] = [str(sum(1 for r in mine if r.state is CaseState.NEEDS_PERSON))]
    return figures


def _read(mail: ReceivedMail) -> dict[str, list[str]]:
    text = mail.text
    figures: dict[str, list[str]] = {}
    for label in ["Cases opened", "Payment links sent", "Recovered", "Amount recovered", "Lost", "Recovery rate"]:
        line = next(line for line in text.splitlines() if line.strip().startswith(label + " "))
        figures[label] = re.split(r"\s{2,}", line.strip())[1:]
    waiting = re.search(r"Waiting for payment now: (\d+)\.", text)
    person = re.search(r"Needing a person \((\d+)\)", text)
    assert waiting is not None
    assert person is not None
    figures["waiting"], figures["needs person"] = [waiting.group(1)], [person.group(1)]
    return figures


@pytest.fixture
def catcher(tmp_path: Path) -> Iterator[MailCatcher]:
    with MailCatcher(tmp_path / "mail") as mail:
        yield mail


def test_each_summary_matches_the_rows_and_is_sent_once_a_day(database_url: str, tmp_path: Path,
                                                               catcher: MailCatcher) -> None:
    import os

    rows = _seed(database_url)
    vendors = tmp_path / "vendors.toml"
    vendors.write_text("".join(TABLE.format(slug=s, zone=z) for s, z in VENDORS.items()), encoding="utf-8")
    env = {**os.environ, "DUNLINK_DATABASE_URL": database_url, "DUNLINK_VENDORS_FILE": str(vendors),
           "DUNLINK_SMTP_URL": f"smtp://127.0.0.1:{catcher.port}", "DUNLINK_MAIL_FROM": "dunning@dunlink.example",
           "DUNLINK_BROKER_URL": "redis://127.0.0.1:1/0"}

    assert "summaries sent: 3" in due(NOW, env=env, cwd=tmp_path)
    mails = {m.rcpt_tos[0]: m for m in catcher.wait_for(3)}
    assert sorted(mails) == [f"owner@{slug}.example" for slug in sorted(VENDORS)]
    for slug in VENDORS:
        mail = mails[f"owner@{slug}.example"]
        assert _read(mail) == _expected(rows, slug), slug
        # As every email: the sender is DUNLINK_MAIL_FROM, shown with the vendor's name.
        sender = mail.message["From"].addresses[0]
        assert (sender.display_name, sender.addr_spec) == (f"{slug} school", "dunning@dunlink.example")

    assert "summaries sent: 0" in due(NOW + timedelta(hours=3), env=env, cwd=tmp_path)
    assert len(catcher.messages) == 3
