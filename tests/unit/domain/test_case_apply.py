"""The case decides what a payment event about it does (``DunningCase.apply``); the pipeline only records the
outcome it names in the inbox."""

from __future__ import annotations

from domain.events import CHARGED_BACK, MADE, RECURRING_CANCELLED, PaymentEvent
from domain.money import Money
from tests.unit.domain.test_case import at, awaiting_payment, opened, replacement_created


def event(kind: str, *, rate: int | None = 3, amount: Money | None = None) -> PaymentEvent:
    return PaymentEvent(kind, "CC-1001", "T-1", "breakdown_payment", rate, amount)


def test_a_payment_on_the_replacement_recovers_the_case() -> None:
    case = awaiting_payment()
    assert case.apply(event(MADE, rate=1, amount=Money(20000, "EUR")), on_replacement=True, now=at(9)) == "recovered"
    assert case.recovered_minor == 20000


def test_a_payment_on_the_original_says_where_it_left_the_case() -> None:
    case = replacement_created()
    outcome = case.apply(event(MADE, amount=Money(5000, "EUR")), on_replacement=False, now=at(9))
    assert outcome == "original_paid:cancelling_replacement"


def test_a_charge_back_before_the_replacement_is_planned_in() -> None:
    case = opened()
    assert case.apply(event(CHARGED_BACK, rate=2), on_replacement=False, now=at(2)) == "charged_back:open"


def test_the_plan_cancelled_on_the_platform_ends_an_open_case() -> None:
    case = opened()
    assert case.apply(event(RECURRING_CANCELLED), on_replacement=False, now=at(2)) == "plan_cancelled:resolved"


def test_anything_else_is_recorded_on_the_timeline() -> None:
    case = awaiting_payment()
    assert case.apply(event(CHARGED_BACK, rate=1), on_replacement=True, now=at(9)) == "recorded"
    assert case.events[-1].kind == CHARGED_BACK
