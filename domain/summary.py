"""The figures of a vendor's daily summary, computed from the vendor's cases.

Windows are local days in the vendor's time zone: "yesterday" is the whole local day before ``today``, the
"last 30 days" are the 30 local days before ``today``. A case counts as opened, sent a link, recovered or
lost in a window when that happened (opened_at, link_sent_at, closed_at) inside it. Waiting and needing a
person are counts at the moment of the summary. The recovery rate is recovered ÷ (recovered + lost) among
the cases that ended in the window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from domain.case import PAID_AFTER_CANCEL, PAID_TWICE, CaseState, DunningCase
from domain.money import Money

DAYS = 30


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    def __contains__(self, moment: datetime | None) -> bool:
        return moment is not None and self.start <= moment < self.end


@dataclass(frozen=True, slots=True)
class Figures:
    opened: int
    links_sent: int
    recovered: int
    recovered_amount: Money
    lost: int

    @property
    def recovery_rate(self) -> float | None:
        ended = self.recovered + self.lost
        return self.recovered / ended if ended else None


@dataclass(frozen=True, slots=True)
class PersonCase:
    case_id: str
    order_id: str
    reason: str
    advice: str


@dataclass(frozen=True, slots=True)
class Summary:
    day: date
    yesterday: Figures
    last_30_days: Figures
    waiting: int
    needs_person: tuple[PersonCase, ...]
    chart: tuple[tuple[date, Money], ...]
    currency: str


def local_day_window(day: date, zone: ZoneInfo, days: int = 1) -> Window:
    """From local midnight of ``day`` for ``days`` local days (DST-safe: midnights are computed, not added)."""
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=days), time(), tzinfo=zone)
    return Window(start, end)


def advice_for(case: DunningCase) -> str:
    """What a person should do, as a key the summary template words in the vendor's language."""
    reason = case.reason or ""
    if reason == PAID_AFTER_CANCEL:
        return "refund_or_reconcile"
    if reason == PAID_TWICE or "both the original and the replacement" in reason:
        return "paid_twice"
    if "payment_url" in reason:
        return "check_link"
    if "original order is" in reason:
        return "check_original"
    if case.failed_step is not None:
        return "retry_or_link_by_hand"
    return "other"


def figures(cases: Iterable[DunningCase], window: Window, currency: str) -> Figures:
    opened = links = recovered = lost = 0
    amount = 0
    for case in cases:
        opened += case.opened_at in window
        links += case.link_sent_at in window
        if case.closed_at in window:
            if case.state is CaseState.RECOVERED:
                recovered += 1
                amount += case.recovered_minor if (case.currency or currency) == currency else 0
            elif case.state is CaseState.LOST:
                lost += 1
    return Figures(opened, links, recovered, Money(amount, currency), lost)


def summarise(cases: list[DunningCase], *, today: date, zone: ZoneInfo, currency: str) -> Summary:
    """The summary sent on ``today`` (local): yesterday, the last 30 days, and the state of things now."""
    yesterday = today - timedelta(days=1)
    chart = tuple(
        (day, figures(cases, local_day_window(day, zone), currency).recovered_amount)
        for day in (today - timedelta(days=DAYS - n) for n in range(DAYS))
    )
    people = tuple(
        PersonCase(case.id, case.original_order_id, case.reason or "", advice_for(case))
        for case in sorted(cases, key=lambda c: c.opened_at) if case.state is CaseState.NEEDS_PERSON
    )
    return Summary(
        day=yesterday,
        yesterday=figures(cases, local_day_window(yesterday, zone), currency),
        last_30_days=figures(cases, local_day_window(today - timedelta(days=DAYS), zone, DAYS), currency),
        waiting=sum(1 for case in cases if case.state is CaseState.AWAITING_PAYMENT),
        needs_person=people,
        chart=chart,
        currency=currency,
    )


def summary_due(now: datetime, zone: ZoneInfo, *, hour: int = 8) -> date | None:
    """The local day whose summary is due at ``now`` (from ``hour`` o'clock local time), else None."""
    local = now.astimezone(zone)
    return local.date() if local.hour >= hour else None

