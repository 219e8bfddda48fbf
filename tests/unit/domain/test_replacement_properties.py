"""The replacement rule's invariants, over generated plans.

Every plan the generators draw is checked against both replacement kinds. The examples across this module
add up to more than 10,000 plans: uneven first payments, refunds, chargebacks and voids, every position of
the failed installment, two-, zero- and three-decimal currencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.money import EXPONENTS, Money
from domain.plans import (
    OWED,
    Frequency,
    Installment,
    InstallmentPlan,
    InstallmentStatus,
    advance,
    replacement_plan,
)
from domain.policy import ReplacementKind

S = InstallmentStatus
CURRENCIES = ("EUR", "USD", "CHF", "JPY", "KRW", "KWD", "BHD")
ODD_DECIMALS = tuple(sorted(c for c, places in EXPONENTS.items() if places != 2))
dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31))
amounts = st.one_of(st.integers(min_value=1, max_value=10**6), st.integers(min_value=1, max_value=10**15))


@dataclass(frozen=True)
class Case:
    plan: InstallmentPlan
    failed: int
    today: date


@st.composite
def _plans(draw: st.DrawFn, *, before: st.SearchStrategy[InstallmentStatus],
           at: st.SearchStrategy[InstallmentStatus], after: st.SearchStrategy[InstallmentStatus],
           currencies: tuple[str, ...] = CURRENCIES) -> Case:
    currency = draw(st.sampled_from(currencies))
    count = draw(st.integers(min_value=1, max_value=24))
    failed = draw(st.integers(min_value=1, max_value=count))
    if draw(st.booleans()):
        # CopeCart's shape: a first payment, then equal following payments.
        first, following = draw(amounts), draw(amounts)
        minors = [first] + [following] * (count - 1)
    else:
        minors = draw(st.lists(amounts, min_size=count, max_size=count))
    statuses = [draw(before) for _ in range(1, failed)] + [draw(at)] + [draw(after) for _ in range(failed, count)]
    frequency = None if count == 1 else draw(st.sampled_from(Frequency))
    start = draw(dates)
    items = tuple(
        Installment(n, Money(minor, currency), advance(start, frequency, n - 1) if frequency else start, status)
        for n, (minor, status) in enumerate(zip(minors, statuses, strict=True), start=1)
    )
    return Case(InstallmentPlan(currency, frequency, items), failed, draw(dates))


# A failure as it happens: earlier installments paid, some given back or voided, later ones open or voided.
failed_plans = _plans(
    before=st.sampled_from([S.PAID, S.PAID, S.PAID, S.REFUNDED, S.CHARGED_BACK, S.VOID, S.FAILED]),
    at=st.just(S.FAILED),
    after=st.sampled_from([S.OPEN, S.OPEN, S.OPEN, S.VOID]),
)
# Any status anywhere, including plans with nothing left to pay.
any_plans = _plans(before=st.sampled_from(S), at=st.sampled_from(S), after=st.sampled_from(S))
settled_plans = _plans(before=st.sampled_from([S.PAID, S.VOID]), at=st.sampled_from([S.PAID, S.VOID]),
                       after=st.sampled_from([S.PAID, S.VOID]))


def owed_by_hand(case: Case) -> int:
    return sum(i.amount.minor for i in case.plan.installments
               if i.status in (S.OPEN, S.FAILED, S.REFUNDED, S.CHARGED_BACK))


def check_replacement(case: Case, kind: ReplacementKind) -> InstallmentPlan | None:
    """Assert the invariants every replacement keeps; return it for kind-specific checks."""
    plan = case.plan
    replacement = replacement_plan(plan, kind=kind, failed_number=case.failed, today=case.today)
    owed = owed_by_hand(case)
    assert plan.outstanding == Money(owed, plan.currency)
    if owed == 0:
        assert replacement is None
        return None
    assert replacement is not None
    items = replacement.installments
    assert replacement.currency == plan.currency
    assert all(i.amount.currency == plan.currency for i in items)
    assert sum(i.amount.minor for i in items) == owed
    assert replacement.outstanding == plan.outstanding
    assert all(i.amount.minor > 0 for i in items)
    assert [i.number for i in items] == list(range(1, len(items) + 1))
    assert all(i.status is S.OPEN for i in items)
    assert items[0].due_date == case.today
    assert all(a.due_date < b.due_date for a, b in pairwise(items))
    if len(items) == 1:
        assert replacement.frequency is None
    if kind is ReplacementKind.SINGLE_PAYMENT:
        assert len(items) == 1
    else:
        owed_from_failed = [i.amount.minor for i in plan.installments if i.number >= case.failed and i.is_owed]
        expected = owed_from_failed or [owed]
        # Each owed installment from the failed one on keeps its amount; earlier arrears join the first.
        assert [i.amount.minor for i in items[1:]] == expected[1:]
        assert len(items) == len(expected)
        if len(items) > 1:
            assert replacement.frequency is plan.frequency
            assert plan.frequency is not None
            assert [i.due_date for i in items] == [advance(case.today, plan.frequency, k) for k in range(len(items))]
    return replacement


@settings(max_examples=4000, deadline=None)
@given(case=failed_plans)
def test_a_failed_installment_always_yields_a_replacement_of_exactly_what_is_owed(case: Case) -> None:
    for kind in ReplacementKind:
        assert check_replacement(case, kind) is not None


@settings(max_examples=3500, deadline=None)
@given(case=any_plans)
def test_invariants_hold_whatever_the_statuses(case: Case) -> None:
    owed = any(i.status in OWED for i in case.plan.installments)
    for kind in ReplacementKind:
        assert (check_replacement(case, kind) is None) is (not owed)


@settings(max_examples=1000, deadline=None)
@given(case=settled_plans)
def test_nothing_owed_means_no_replacement(case: Case) -> None:
    for kind in ReplacementKind:
        assert replacement_plan(case.plan, kind=kind, failed_number=case.failed, today=case.today) is None


@settings(max_examples=1500, deadline=None)
@given(
    currency=st.sampled_from(ODD_DECIMALS),
    first=amounts,
    following=amounts,
    count=st.integers(min_value=2, max_value=36),
    data=st.data(),
    order_date=dates,
    today=dates,
)
def test_plans_read_from_ipn_fields_in_zero_and_three_decimal_currencies(
    currency: str, first: int, following: int, count: int, data: st.DataObject, order_date: date, today: date
) -> None:
    rate = data.draw(st.integers(min_value=1, max_value=count), label="rate_number")
    frequency = data.draw(st.sampled_from(Frequency), label="frequency")
    fields = {
        "transaction_currency": currency,
        "first_payment": Money(first, currency).decimal_string(),
        "next_payments": Money(following, currency).decimal_string(),
        "total_number_of_payments": str(count),
        "rate_number": str(rate),
        "frequency": frequency.value,
        "order_date": order_date.isoformat(),
    }
    plan = InstallmentPlan.from_ipn(fields)
    owed = (first if rate == 1 else 0) + following * (count - max(rate, 2) + 1)
    assert plan.outstanding == Money(owed, currency)
    case = Case(plan, rate, today)
    remaining = check_replacement(case, ReplacementKind.REMAINING_INSTALLMENTS)
    assert remaining is not None
    assert [i.amount.minor for i in remaining.installments] == [i.amount.minor for i in plan.installments[rate - 1:]]
    single = check_replacement(case, ReplacementKind.SINGLE_PAYMENT)
    assert single is not None
    assert single.installments[0].amount == Money(owed, currency)
