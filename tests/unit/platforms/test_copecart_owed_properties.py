"""What is owed, rebuilt from generated IPN histories.

Each example draws the truth of an order (its plan, and what happened to every installment: paid, refunded,
charged back, paid again, failed, confirmed paid by a person), writes the IPNs CopeCart would have sent for
it in the fixtures' shape, and delivers them in a shuffled order with duplicates. The owed amount is summed
from that truth, never from the code under test. A consistent history must yield replacements of exactly
that amount; a history spoiled in one way must raise ``PlanError`` and never return a plan.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.money import Money
from domain.plans import Frequency, InstallmentPlan, InstallmentStatus, PlanError, replacement_plan
from domain.policy import ReplacementKind
from platforms.copecart.owed import FailedInstallmentPaid, SeenIpn, UnseenInstallments, read_seen, rebuild_plan

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "copecart"
TEMPLATE: dict[str, Any] = json.loads((FIXTURES / "payment_failed_breakdown.json").read_text())
S = InstallmentStatus
CURRENCIES = ("EUR", "USD", "CHF", "JPY", "KRW", "KWD", "BHD")
FAILED, MADE, REFUNDED, CHARGED_BACK = "payment.failed", "payment.made", "payment.refunded", "payment.charged_back"
GIVE_BACKS = (REFUNDED, CHARGED_BACK)
TERMS = ("total_number_of_payments", "first_payment", "next_payments", "frequency", "order_date", "payment_plan")

# What happened to an installment: the IPNs it caused, in the order CopeCart sent them, and its status.
# "confirmed" ones had no IPN dunlink saw; a person found them paid in CopeCart.
OUTCOMES: dict[str, tuple[tuple[str, ...], InstallmentStatus]] = {
    "paid": ((MADE,), S.PAID),
    "refunded": ((MADE, REFUNDED), S.REFUNDED),
    "charged_back": ((MADE, CHARGED_BACK), S.CHARGED_BACK),
    "paid_again": ((MADE, REFUNDED, MADE), S.PAID),
    "failed": ((FAILED,), S.FAILED),
    "failed_then_paid": ((FAILED, MADE), S.PAID),
    "failed_twice": ((FAILED, FAILED), S.FAILED),
    "paid_refunded_failed": ((MADE, REFUNDED, FAILED), S.FAILED),
    "confirmed": ((), S.PAID),
    "confirmed_refunded": ((REFUNDED,), S.REFUNDED),
    "not_yet": ((), S.OPEN),
}
BEFORE = ("paid", "refunded", "charged_back", "paid_again", "failed", "failed_then_paid", "confirmed",
          "confirmed_refunded")
AT = ("failed", "failed_twice", "paid_refunded_failed")
AFTER = ("not_yet", "paid", "refunded", "charged_back", "failed")
OWED = frozenset({S.OPEN, S.FAILED, S.REFUNDED, S.CHARGED_BACK})

amounts = st.one_of(st.integers(min_value=1, max_value=10**5), st.integers(min_value=1, max_value=10**12))


@dataclass(frozen=True)
class Order:
    """The truth the IPNs are written from."""

    currency: str
    first: int
    following: int
    frequency: Frequency
    order_date: date
    failed: int
    outcomes: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.outcomes)

    def amount(self, number: int) -> int:
        return self.first if number == 1 else self.following

    def status(self, number: int) -> InstallmentStatus:
        return OUTCOMES[self.outcomes[number - 1]][1]

    @property
    def owed(self) -> int:
        return sum(self.amount(n) for n in range(1, self.count + 1) if self.status(n) in OWED)

    @property
    def confirmed(self) -> tuple[int, ...]:
        return tuple(n for n, outcome in enumerate(self.outcomes, start=1) if outcome.startswith("confirmed"))


@dataclass
class History:
    order: Order
    events: list[dict[str, Any]]
    failing: int  # index of the failing event in ``events``
    confirmed: tuple[int, ...]
    next_id: int

    def new_id(self) -> str:
        self.next_id += 1
        return f"T-{self.next_id}"

    def ipn(self, kind: str, number: int) -> dict[str, Any]:
        """The IPN CopeCart sends for ``kind`` of installment ``number`` (a give-back's amount is negative)."""
        order = self.order
        amount = order.amount(number)
        if kind in GIVE_BACKS:
            amount = -amount
        return TEMPLATE | {
            "event_type": kind,
            "transaction_id": self.new_id(),
            "rate_number": str(number),
            "transaction_amount": money(amount, order.currency),
            "transaction_currency": order.currency,
            "total_number_of_payments": str(order.count),
            "first_payment": money(order.first, order.currency),
            # As CopeCart's breakdown sends it for one installment: the first payment again.
            "next_payments": money(order.following if order.count > 1 else order.first, order.currency),
            "frequency": order.frequency.value,
            "order_date": order.order_date.isoformat(),
        }

    def others(self) -> list[int]:
        return [i for i in range(len(self.events)) if i != self.failing]

    def seen(self, number: int, kind: str) -> int:
        return sum(1 for e in self.events if e["rate_number"] == str(number) and e["event_type"] == kind)


def money(minor: int, currency: str) -> str:
    return Money(minor, currency).decimal_string()


@st.composite
def histories(draw: st.DrawFn) -> History:
    count = draw(st.integers(min_value=1, max_value=18))
    failed = draw(st.integers(min_value=1, max_value=count))
    outcomes = ([draw(st.sampled_from(BEFORE)) for _ in range(1, failed)] + [draw(st.sampled_from(AT))]
                + [draw(st.sampled_from(AFTER)) for _ in range(failed, count)])
    first = draw(amounts)
    order = Order(currency=draw(st.sampled_from(CURRENCIES)), first=first,
                  following=draw(st.one_of(st.just(first), amounts)), frequency=draw(st.sampled_from(Frequency)),
                  order_date=draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31))),
                  failed=failed, outcomes=tuple(outcomes))
    history = History(order, [], -1, order.confirmed, 0)
    for number, outcome in enumerate(outcomes, start=1):
        for kind in OUTCOMES[outcome][0]:
            history.events.append(history.ipn(kind, number))
    history.failing = max(i for i, e in enumerate(history.events)
                          if e["event_type"] == FAILED and e["rate_number"] == str(failed))
    # Some IPNs may not carry the plan's terms; they are then not compared, and amounts still are.
    for i in history.others():
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            history.events[i] = history.events[i] | dict.fromkeys(TERMS)
    return history


@st.composite
def arrivals(draw: st.DrawFn, history: History) -> list[dict[str, Any]]:
    """The IPNs as they reach dunlink: some twice, in any order, the failing one among them or not."""
    events = list(history.events)
    if events:
        events += draw(st.lists(st.sampled_from(events), max_size=6))
    if draw(st.booleans()):
        failing = history.events[history.failing]
        events = [e for e in events if e is not failing]
    return draw(st.permutations(events))


def rebuild(history: History, bodies: list[dict[str, Any]]) -> InstallmentPlan:
    return rebuild_plan(SeenIpn.from_fields(history.events[history.failing]), read_seen(bodies),
                        confirmed_paid=history.confirmed)


@settings(max_examples=1500, deadline=None)
@given(history=histories(), data=st.data(),
       today=st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)))
def test_the_replacement_is_always_exactly_what_is_owed(history: History, data: st.DataObject, today: date) -> None:
    order = history.order
    plan = rebuild(history, data.draw(arrivals(history), label="arrival"))
    assert [i.status for i in plan.installments] == [order.status(n) for n in range(1, order.count + 1)]
    assert [i.amount for i in plan.installments] == [Money(order.amount(n), order.currency)
                                                     for n in range(1, order.count + 1)]
    assert plan.outstanding == Money(order.owed, order.currency)
    assert rebuild(history, data.draw(arrivals(history), label="another arrival")) == plan
    owed_from_failed = sum(1 for n in range(order.failed, order.count + 1) if order.status(n) in OWED)
    for kind in ReplacementKind:
        replacement = replacement_plan(plan, kind=kind, failed_number=order.failed, today=today)
        assert replacement is not None
        items = replacement.installments
        assert sum(i.amount.minor for i in items) == order.owed
        assert replacement.currency == order.currency
        assert all(i.amount.currency == order.currency for i in items)
        assert all(i.amount.minor > 0 for i in items)
        assert len(items) == (1 if kind is ReplacementKind.SINGLE_PAYMENT else owed_from_failed)


# -- spoiled histories -----------------------------------------------------------------------------------


def _pick(draw: st.DrawFn, history: History, *, include_failing: bool) -> int:
    """An event to spoil; a second failure of the failed installment is added when there is no other."""
    choices = list(range(len(history.events))) if include_failing else history.others()
    if not choices or draw(st.integers(min_value=0, max_value=4)) == 0:
        history.events.append(history.ipn(FAILED, history.order.failed))
        return len(history.events) - 1
    return draw(st.sampled_from(choices))


def _other_than(draw: st.DrawFn, value: int) -> int:
    return draw(amounts.filter(lambda a: a != value))


def spoil_amount(draw: st.DrawFn, history: History) -> None:
    i = _pick(draw, history, include_failing=True)
    event = history.events[i]
    wrong = _other_than(draw, history.order.amount(int(event["rate_number"])))
    sign = -1 if event["event_type"] in GIVE_BACKS else 1
    history.events[i] = event | {"transaction_amount": money(sign * wrong, history.order.currency)}


def spoil_nonpositive(draw: st.DrawFn, history: History) -> None:
    i = draw(st.sampled_from([i for i, e in enumerate(history.events) if e["event_type"] in (MADE, FAILED)]))
    minor = draw(st.integers(min_value=-(10**6), max_value=0))
    history.events[i] = history.events[i] | {"transaction_amount": money(minor, history.order.currency)}


def spoil_beyond(draw: st.DrawFn, history: History) -> None:
    kind = draw(st.sampled_from((MADE, FAILED, REFUNDED, CHARGED_BACK)))
    number = history.order.count + draw(st.integers(min_value=1, max_value=3))
    history.events.append(history.ipn(kind, number))


def spoil_currency(draw: st.DrawFn, history: History) -> None:
    i = _pick(draw, history, include_failing=False)
    event = history.events[i]
    other = draw(st.sampled_from([c for c in CURRENCIES if c != history.order.currency]))
    moved = {"transaction_amount": Money.parse(event["transaction_amount"], history.order.currency).minor}
    for name in ("first_payment", "next_payments"):
        if event[name] is not None:
            moved[name] = Money.parse(event[name], history.order.currency).minor
    history.events[i] = event | {name: money(minor, other) for name, minor in moved.items()} | {
        "transaction_currency": other}


def spoil_terms(draw: st.DrawFn, history: History) -> None:
    i = _pick(draw, history, include_failing=False)
    order = history.order
    term = draw(st.sampled_from(TERMS))
    changed: Any = {
        "total_number_of_payments": str(order.count + draw(st.integers(min_value=1, max_value=3))),
        "first_payment": money(_other_than(draw, order.first), order.currency),
        "next_payments": money(_other_than(draw, order.following if order.count > 1 else order.first),
                               order.currency),
        "frequency": draw(st.sampled_from([f.value for f in Frequency if f is not order.frequency])),
        "order_date": (order.order_date + timedelta(days=draw(st.integers(min_value=1, max_value=400)))).isoformat(),
        "payment_plan": draw(st.sampled_from(("one_time_payment", "subscription"))),
    }[term]
    history.events[i] = history.events[i] | {term: changed}


def spoil_give_back_unpaid(draw: st.DrawFn, history: History) -> None:
    unpaid = [n for n in range(1, history.order.count + 1)
              if history.seen(n, MADE) == 0 and n not in history.confirmed]
    assume(unpaid)
    number = draw(st.sampled_from(unpaid))
    history.events.append(history.ipn(draw(st.sampled_from(GIVE_BACKS)), number))


def _pay_until(history: History, number: int, net: int) -> None:
    """Add payments of ``number`` until it is paid ``net`` times more than it was given back."""
    given_back = sum(history.seen(number, kind) for kind in GIVE_BACKS)
    for _ in range(given_back + net - history.seen(number, MADE)):
        history.events.append(history.ipn(MADE, number))


def spoil_paid_twice(draw: st.DrawFn, history: History) -> None:
    _pay_until(history, draw(st.integers(min_value=1, max_value=history.order.count)), 2)


def spoil_failed_paid(draw: st.DrawFn, history: History) -> None:
    _pay_until(history, history.order.failed, 1)


def spoil_order(draw: st.DrawFn, history: History) -> None:
    i = _pick(draw, history, include_failing=False)
    history.events[i] = history.events[i] | {"order_id": draw(st.sampled_from(("CC-1002", "cc-1001", "CC-1001 ")))}


def spoil_duplicate(draw: st.DrawFn, history: History) -> None:
    i = draw(st.sampled_from(range(len(history.events))))
    event = history.events[i]
    if history.order.count > 1 and draw(st.booleans()):
        other = draw(st.integers(min_value=1, max_value=history.order.count).filter(
            lambda n: n != int(event["rate_number"])))
        history.events.append(event | {"rate_number": str(other)})
    else:
        history.events.append(event | {"transaction_amount": money(_other_than(draw, history.order.amount(
            int(event["rate_number"]))), history.order.currency)})


def spoil_unseen(draw: st.DrawFn, history: History) -> None:
    assume(history.order.failed > 1)
    number = draw(st.integers(min_value=1, max_value=history.order.failed - 1))
    history.events = [e for e in history.events if e["rate_number"] != str(number)]
    history.failing = max(i for i, e in enumerate(history.events)
                          if e["event_type"] == FAILED and e["rate_number"] == str(history.order.failed))
    history.confirmed = tuple(n for n in history.confirmed if n != number)


# Each spoil, the error it must raise, and the reason that error must give a person.
SPOILS: dict[str, tuple[Callable[[st.DrawFn, History], None], type[PlanError], str]] = {
    "a payment, failure or give-back of another amount than its installment's":
        (spoil_amount, PlanError, "the amounts do not add up"),
    "a zero or negative payment": (spoil_nonpositive, PlanError, "a payment must be a positive amount"),
    "an installment beyond the plan": (spoil_beyond, PlanError, "beyond the plan's"),
    "mixed currencies": (spoil_currency, PlanError, "mixed currencies"),
    "terms that differ between IPNs": (spoil_terms, PlanError, "the failed payment T-"),
    "a refund or charge-back of an unpaid installment":
        (spoil_give_back_unpaid, PlanError, "but no payment of it was seen"),
    "an installment paid twice": (spoil_paid_twice, PlanError, "check whether the buyer was charged twice"),
    "the failed installment paid": (spoil_failed_paid, FailedInstallmentPaid, "nothing is owed for it"),
    "an IPN of another order": (spoil_order, PlanError, "is for order"),
    "one transaction seen with two contents": (spoil_duplicate, PlanError, "seen twice with different contents"),
    "an earlier installment with nothing seen": (spoil_unseen, UnseenInstallments, "check them in CopeCart"),
}


@st.composite
def spoiled(draw: st.DrawFn, spoil: Callable[[st.DrawFn, History], None]) -> History:
    history = draw(histories())
    spoil(draw, history)
    return history


@pytest.mark.parametrize("name", list(SPOILS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_history_that_does_not_add_up_never_yields_a_plan(name: str, data: st.DataObject) -> None:
    spoil, error, reason = SPOILS[name]
    history = data.draw(spoiled(spoil), label="history")
    bodies = data.draw(arrivals(history), label="arrival")
    with pytest.raises(error, match=reason):
        rebuild(history, bodies)
