"""Installment plans: what is owed, how a plan is read from the platform, and the replacement rule."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from domain.money import Money
from domain.plans import (
    Frequency,
    Installment,
    InstallmentPlan,
    InstallmentStatus,
    PlanError,
    advance,
    parse_frequency,
    replacement_plan,
)
from domain.policy import ReplacementKind

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "copecart"
S = InstallmentStatus
REMAINING, SINGLE = ReplacementKind.REMAINING_INSTALLMENTS, ReplacementKind.SINGLE_PAYMENT
TODAY = date(2026, 10, 3)


def ipn(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


def make_plan(*rows: tuple[int, InstallmentStatus], currency: str = "EUR",
              frequency: Frequency | None = Frequency.MONTHLY, start: date = date(2026, 8, 1)) -> InstallmentPlan:
    items = tuple(
        Installment(n, Money(minor, currency), advance(start, frequency, n - 1) if frequency else start, status)
        for n, (minor, status) in enumerate(rows, start=1)
    )
    return InstallmentPlan(currency, frequency, items)


def amounts(plan: InstallmentPlan) -> list[int]:
    return [i.amount.minor for i in plan.installments]


def due_dates(plan: InstallmentPlan) -> list[date]:
    return [i.due_date for i in plan.installments]


# -- outstanding -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "scheduled", "paid", "outstanding"),
    [
        ([(5000, S.PAID), (5000, S.PAID), (5000, S.FAILED), (5000, S.OPEN)], 20000, 10000, 10000),
        ([(9900, S.PAID), (5000, S.FAILED), (5000, S.OPEN)], 19900, 9900, 10000),
        ([(9900, S.REFUNDED), (5000, S.PAID), (5000, S.FAILED)], 19900, 5000, 14900),
        ([(5000, S.CHARGED_BACK), (5000, S.PAID), (5000, S.FAILED), (5000, S.OPEN)], 20000, 5000, 15000),
        ([(5000, S.PAID), (5000, S.FAILED), (5000, S.VOID), (5000, S.VOID)], 10000, 5000, 5000),
        ([(5000, S.PAID), (5000, S.PAID)], 10000, 10000, 0),
        ([(5000, S.VOID), (5000, S.VOID)], 0, 0, 0),
    ],
)
def test_outstanding_is_scheduled_minus_paid_plus_what_was_given_back(
    rows: list[tuple[int, InstallmentStatus]], scheduled: int, paid: int, outstanding: int
) -> None:
    plan = make_plan(*rows)
    assert plan.scheduled == eur(scheduled)
    assert plan.paid == eur(paid)
    assert plan.outstanding == eur(outstanding)
    given_back = sum(m for m, s in rows if s in (S.REFUNDED, S.CHARGED_BACK))
    # Refunded and charged-back installments were paid once, then returned.
    assert plan.outstanding == plan.scheduled - (plan.paid + eur(given_back)) + eur(given_back)


def test_installment_lookup_and_with_status() -> None:
    plan = make_plan((5000, S.PAID), (5000, S.OPEN))
    assert plan.installment(2).status is S.OPEN
    failed = plan.with_status(2, S.FAILED)
    assert failed.installment(2).status is S.FAILED
    assert plan.installment(2).status is S.OPEN, "with_status returns a new plan"
    for missing in (0, 3, -1):
        with pytest.raises(PlanError, match="no installment"):
            plan.installment(missing)
        with pytest.raises(PlanError):
            plan.with_status(missing, S.PAID)


@pytest.mark.parametrize(
    ("items", "frequency", "message"),
    [
        ((), Frequency.MONTHLY, "at least one installment"),
        ((Installment(2, eur(100), TODAY, S.OPEN),), None, "numbered 1..n"),
        ((Installment(1, eur(100), TODAY, S.OPEN), Installment(3, eur(100), TODAY, S.OPEN)),
         Frequency.MONTHLY, "numbered 1..n"),
        ((Installment(1, Money(100, "USD"), TODAY, S.OPEN),), None, "in USD, plan in EUR"),
        ((Installment(1, eur(0), TODAY, S.OPEN),), None, "positive amount"),
        ((Installment(1, eur(-100), TODAY, S.REFUNDED),), None, "positive amount"),
        ((Installment(1, eur(100), TODAY, S.OPEN), Installment(2, eur(100), TODAY, S.OPEN)), None,
         "needs a frequency"),
    ],
)
def test_inconsistent_plans_are_refused(items: tuple[Installment, ...], frequency: Frequency | None,
                                        message: str) -> None:
    with pytest.raises(PlanError, match=message):
        InstallmentPlan("EUR", frequency, items)


# -- reading plans ---------------------------------------------------------------------------------------


def platform_order(**overrides: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": "CC-1001", "vendor": "acme", "status": "active",
        "product": {"id": "p-42", "name": "Coaching Program"},
        "buyer": {"id": "b-7", "email": "anna@example.com", "first_name": "Anna", "last_name": "Meier",
                  "country_code": "DE"},
        "currency": "EUR",
        "plan": {"kind": "installments", "frequency": "monthly",
                 "installments": [
                     {"number": 1, "amount": 9900, "due_date": "2026-08-01", "status": "paid"},
                     {"number": 2, "amount": 5000, "due_date": "2026-09-01", "status": "refunded"},
                     {"number": 3, "amount": 5000, "due_date": "2026-10-01", "status": "failed"},
                     {"number": 4, "amount": 5000, "due_date": "2026-11-01", "status": "open"},
                     {"number": 5, "amount": 5000, "due_date": "2026-12-01", "status": "void"},
                 ]},
        "payment_url": "http://127.0.0.1:8090/pay/CC-1001",
        "replaces": None,
    }
    order.update(overrides)
    return order


def test_from_order_reads_the_platform_order() -> None:
    plan = InstallmentPlan.from_order(platform_order())
    assert plan.currency == "EUR"
    assert plan.frequency is Frequency.MONTHLY
    assert [(i.number, i.amount, i.due_date, i.status) for i in plan.installments] == [
        (1, eur(9900), date(2026, 8, 1), S.PAID),
        (2, eur(5000), date(2026, 9, 1), S.REFUNDED),
        (3, eur(5000), date(2026, 10, 1), S.FAILED),
        (4, eur(5000), date(2026, 11, 1), S.OPEN),
        (5, eur(5000), date(2026, 12, 1), S.VOID),
    ]
    assert plan.outstanding == eur(15000)


def test_from_order_one_time_and_json_round_trip() -> None:
    one_time = platform_order(currency="JPY", plan={
        "kind": "one_time", "frequency": None,
        "installments": [{"number": 1, "amount": 19900, "due_date": "2026-08-01", "status": "failed"}]})
    plan = InstallmentPlan.from_order(one_time)
    assert plan.frequency is None
    assert plan.outstanding == Money(19900, "JPY")
    assert plan.to_json() == one_time["plan"]

    order = platform_order()
    assert InstallmentPlan.from_order(order).to_json() == order["plan"]
    assert InstallmentPlan.from_order({"currency": "EUR", "plan": InstallmentPlan.from_order(order).to_json()}) \
        == InstallmentPlan.from_order(order)


def _with_installment(**changes: Any) -> dict[str, Any]:
    order = platform_order()
    order["plan"]["installments"][0].update(changes)
    return order


@pytest.mark.parametrize(
    "order",
    [
        _with_installment(amount="99.00"),
        _with_installment(amount=99.0),
        _with_installment(amount=True),
        _with_installment(amount=0),
        _with_installment(status="pending"),
        _with_installment(due_date="01.08.2026"),
        _with_installment(number=2),
        platform_order(currency="XXX"),
        platform_order(plan=None),
        platform_order(plan={"frequency": "fortnightly", "installments": []}),
        {k: v for k, v in platform_order().items() if k != "currency"},
        platform_order(plan={"kind": "installments", "frequency": "monthly", "installments": []}),
    ],
)
def test_from_order_refuses_a_plan_it_cannot_trust(order: dict[str, Any]) -> None:
    with pytest.raises(PlanError):
        InstallmentPlan.from_order(order)


def test_from_ipn_rebuilds_the_failed_plan_from_the_copecart_fixture() -> None:
    plan = InstallmentPlan.from_ipn(ipn("payment_failed_breakdown.json"))
    assert plan.currency == "EUR"
    assert plan.frequency is Frequency.MONTHLY
    assert amounts(plan) == [5000] * 6
    assert [i.status for i in plan.installments] == [S.PAID, S.PAID, S.FAILED, S.OPEN, S.OPEN, S.OPEN]
    assert due_dates(plan) == [date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1),
                               date(2026, 12, 1), date(2027, 1, 1)]
    assert plan.outstanding == Money.parse("200.00", "EUR")
    assert str(plan.outstanding) == "200.00 EUR"


def test_from_ipn_for_a_payment_made() -> None:
    plan = InstallmentPlan.from_ipn(ipn("payment_made_breakdown.json"), failed=False)
    assert [i.status for i in plan.installments] == [S.PAID, S.PAID, S.OPEN, S.OPEN, S.OPEN, S.OPEN]
    assert plan.outstanding == eur(20000)


def test_from_ipn_uneven_first_payment_zero_decimal_currency_and_month_ends() -> None:
    fields = ipn("payment_failed_breakdown.json") | {
        "first_payment": "12000", "next_payments": "4500", "transaction_currency": "JPY",
        "total_number_of_payments": "4", "rate_number": "1", "order_date": "2026-01-31",
    }
    plan = InstallmentPlan.from_ipn(fields)
    assert [i.amount for i in plan.installments] == [Money(12000, "JPY")] + [Money(4500, "JPY")] * 3
    assert due_dates(plan) == [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]
    assert plan.outstanding == Money(25500, "JPY")


def test_from_ipn_single_payment_plan() -> None:
    fields = ipn("payment_failed_breakdown.json") | {
        "total_number_of_payments": "1", "rate_number": "1", "next_payments": None, "frequency": None}
    plan = InstallmentPlan.from_ipn(fields)
    assert plan.frequency is None
    assert [(i.amount, i.due_date, i.status) for i in plan.installments] == [(eur(5000), date(2026, 8, 1), S.FAILED)]


@pytest.mark.parametrize(
    "changes",
    [
        {"rate_number": "7"},
        {"rate_number": "0"},
        {"total_number_of_payments": None},
        {"first_payment": 50.0},
        {"next_payments": "50.001"},
        {"first_payment": "0.00"},
        {"frequency": "fortnightly"},
        {"frequency": None},
        {"transaction_currency": "XXX"},
        {"order_date": "2026-13-01"},
    ],
)
def test_from_ipn_refuses_fields_that_do_not_describe_a_plan(changes: dict[str, Any]) -> None:
    with pytest.raises(PlanError):
        InstallmentPlan.from_ipn(ipn("payment_failed_breakdown.json") | changes)


def test_from_ipn_refuses_a_one_time_payment_and_missing_fields() -> None:
    with pytest.raises(PlanError):
        InstallmentPlan.from_ipn(ipn("payment_failed_one_time.json"))
    fields = ipn("payment_failed_breakdown.json")
    del fields["order_date"]
    with pytest.raises(PlanError, match="order_date"):
        InstallmentPlan.from_ipn(fields)


@pytest.mark.parametrize(
    ("value", "frequency"),
    [("monthly", Frequency.MONTHLY), (" Monthly ", Frequency.MONTHLY), ("half-yearly", Frequency.HALF_YEARLY),
     ("BIWEEKLY", Frequency.BIWEEKLY)],
)
def test_parse_frequency(value: str, frequency: Frequency) -> None:
    assert parse_frequency(value) is frequency


def test_parse_frequency_refuses_unknown_values() -> None:
    with pytest.raises(PlanError, match="unknown payment frequency"):
        parse_frequency("every full moon")


# -- dates -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "frequency", "periods", "expected"),
    [
        (date(2026, 1, 31), Frequency.MONTHLY, 1, date(2026, 2, 28)),
        (date(2028, 1, 31), Frequency.MONTHLY, 1, date(2028, 2, 29)),
        (date(2026, 1, 31), Frequency.MONTHLY, 2, date(2026, 3, 31)),
        (date(2026, 1, 31), Frequency.MONTHLY, 3, date(2026, 4, 30)),
        (date(2026, 12, 15), Frequency.MONTHLY, 1, date(2027, 1, 15)),
        (date(2026, 3, 31), Frequency.MONTHLY, -1, date(2026, 2, 28)),
        (date(2026, 11, 30), Frequency.QUARTERLY, 1, date(2027, 2, 28)),
        (date(2026, 8, 31), Frequency.HALF_YEARLY, 1, date(2027, 2, 28)),
        (date(2024, 2, 29), Frequency.YEARLY, 1, date(2025, 2, 28)),
        (date(2024, 2, 29), Frequency.YEARLY, 4, date(2028, 2, 29)),
        (date(2026, 12, 31), Frequency.DAILY, 1, date(2027, 1, 1)),
        (date(2026, 2, 26), Frequency.WEEKLY, 1, date(2026, 3, 5)),
        (date(2026, 2, 26), Frequency.BIWEEKLY, 2, date(2026, 3, 26)),
        (date(2026, 5, 17), Frequency.MONTHLY, 0, date(2026, 5, 17)),
    ],
)
def test_advance_clamps_month_ends_and_does_not_drift(start: date, frequency: Frequency, periods: int,
                                                      expected: date) -> None:
    assert advance(start, frequency, periods) == expected


# -- the replacement rule --------------------------------------------------------------------------------


def test_remaining_installments_for_the_fixture() -> None:
    plan = InstallmentPlan.from_ipn(ipn("payment_failed_breakdown.json"))
    replacement = replacement_plan(plan, kind=REMAINING, failed_number=3, today=TODAY)
    assert replacement is not None
    assert replacement.currency == "EUR"
    assert replacement.frequency is Frequency.MONTHLY
    assert [i.number for i in replacement.installments] == [1, 2, 3, 4]
    assert amounts(replacement) == [5000, 5000, 5000, 5000]
    assert due_dates(replacement) == [date(2026, 10, 3), date(2026, 11, 3), date(2026, 12, 3), date(2027, 1, 3)]
    assert all(i.status is S.OPEN for i in replacement.installments)
    assert replacement.outstanding == plan.outstanding == eur(20000)


def test_single_payment_for_the_fixture() -> None:
    plan = InstallmentPlan.from_ipn(ipn("payment_failed_breakdown.json"))
    replacement = replacement_plan(plan, kind=SINGLE, failed_number=3, today=TODAY)
    assert replacement is not None
    assert replacement.frequency is None
    assert [(i.number, i.amount, i.due_date, i.status) for i in replacement.installments] == [
        (1, eur(20000), TODAY, S.OPEN)]
    assert replacement.to_json()["kind"] == "one_time"


def test_remaining_installments_keep_uneven_amounts_and_weekly_frequency() -> None:
    plan = make_plan((9900, S.PAID), (4999, S.FAILED), (5001, S.OPEN), (3000, S.OPEN), frequency=Frequency.WEEKLY)
    replacement = replacement_plan(plan, kind=REMAINING, failed_number=2, today=TODAY)
    assert replacement is not None
    assert amounts(replacement) == [4999, 5001, 3000]
    assert due_dates(replacement) == [date(2026, 10, 3), date(2026, 10, 10), date(2026, 10, 17)]
    assert replacement.frequency is Frequency.WEEKLY


def test_replacement_starting_on_a_month_end_clamps_without_drifting() -> None:
    plan = make_plan((5000, S.FAILED), (5000, S.OPEN), (5000, S.OPEN), (5000, S.OPEN))
    replacement = replacement_plan(plan, kind=REMAINING, failed_number=1, today=date(2027, 1, 31))
    assert replacement is not None
    assert due_dates(replacement) == [date(2027, 1, 31), date(2027, 2, 28), date(2027, 3, 31), date(2027, 4, 30)]


@pytest.mark.parametrize(
    ("rows", "failed", "expected"),
    [
        # A refund of installment 1 is owed again: it joins the first replacement installment.
        ([(5000, S.REFUNDED), (5000, S.PAID), (5000, S.FAILED), (5000, S.OPEN)], 3, [10000, 5000]),
        ([(9900, S.CHARGED_BACK), (5000, S.REFUNDED), (5000, S.FAILED), (5000, S.OPEN)], 3, [19900, 5000]),
        # An earlier installment that failed too is owed as well.
        ([(5000, S.PAID), (5000, S.FAILED), (5000, S.FAILED), (5000, S.OPEN)], 3, [10000, 5000]),
        # Void installments are not asked for.
        ([(5000, S.PAID), (5000, S.FAILED), (5000, S.VOID), (5000, S.OPEN)], 2, [5000, 5000]),
        # The failed installment is the last: one installment, no frequency.
        ([(5000, S.REFUNDED), (5000, S.PAID), (5000, S.FAILED)], 3, [10000]),
    ],
)
def test_earlier_amounts_owed_are_folded_into_the_first_replacement_installment(
    rows: list[tuple[int, InstallmentStatus]], failed: int, expected: list[int]
) -> None:
    plan = make_plan(*rows)
    replacement = replacement_plan(plan, kind=REMAINING, failed_number=failed, today=TODAY)
    assert replacement is not None
    assert amounts(replacement) == expected
    assert replacement.outstanding == plan.outstanding
    assert replacement.frequency is (Frequency.MONTHLY if len(expected) > 1 else None)
    single = replacement_plan(plan, kind=SINGLE, failed_number=failed, today=TODAY)
    assert single is not None
    assert amounts(single) == [sum(expected)]


@pytest.mark.parametrize("kind", [REMAINING, SINGLE])
def test_nothing_owed_means_no_replacement(kind: ReplacementKind) -> None:
    for plan in (
        make_plan((5000, S.PAID), (5000, S.PAID), (5000, S.PAID)),
        make_plan((5000, S.PAID), (5000, S.VOID), (5000, S.VOID)),
        make_plan((5000, S.VOID), frequency=None),
    ):
        assert replacement_plan(plan, kind=kind, failed_number=2 if len(plan.installments) > 1 else 1,
                                today=TODAY) is None


def test_one_time_plan_is_replaced_by_one_payment_whatever_the_kind() -> None:
    plan = make_plan((19900, S.FAILED), frequency=None)
    for kind in (REMAINING, SINGLE):
        replacement = replacement_plan(plan, kind=kind, failed_number=1, today=TODAY)
        assert replacement is not None
        assert [(i.amount, i.due_date) for i in replacement.installments] == [(eur(19900), TODAY)]


def test_replacement_needs_an_installment_of_the_plan() -> None:
    plan = make_plan((5000, S.PAID), (5000, S.FAILED))
    with pytest.raises(PlanError, match="no installment 3"):
        replacement_plan(plan, kind=REMAINING, failed_number=3, today=TODAY)
