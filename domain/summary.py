"""The figures of a vendor's daily summary, computed from the vendor's cases.

Windows are local days in the vendor's time zone: "yesterday" is the whole local day before ``today``, the
"last 30 days" are the 30 local days before ``today``. A case counts as opened, sent a link, recovered or
lost in a window when that happened (opened_at, link_sent_at, closed_at) inside it. Waiting and needing a
person are counts at the moment of the summary. The recovery rate is recovered ÷ (recovered + lost) among
the cases that ended in the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from domain.case import CaseState, DunningCase
from domain.money import Money, MoneyError

DAYS = 30
# Reason parameters that are amounts in minor units of the case's currency (as in the case's timeline).
AMOUNT_PARAMS = frozenset({"amount"})


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
    """A case waiting for a person, with why as a code and its parameters (amounts as Money); no code: the
    case was handed over for a reason the emails cannot word, and they point to ``dunlink cases show``."""

    case_id: str
    order_id: str
    reason_code: str | None
    params: Mapping[str, object] = field(default_factory=dict)


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


def person_case(case: DunningCase) -> PersonCase:
    """The case as the summary shows it: its reason code, and parameters with amounts in the case's currency."""
    params: dict[str, object] = dict(case.reason_params)
    for key in AMOUNT_PARAMS & params.keys():
        # Anything but whole minor units of a known currency is dropped: the message needing it then falls back
        # to the general one rather than show a wrong amount.
        value = params.pop(key)
        if case.currency is not None and isinstance(value, int) and not isinstance(value, bool):
            with suppress(MoneyError):
                params[key] = Money(value, case.currency)
    return PersonCase(case.id, case.original_order_id, case.reason_code, params)


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
        person_case(case) for case in sorted(cases, key=lambda c: c.opened_at) if case.state is CaseState.NEEDS_PERSON
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

