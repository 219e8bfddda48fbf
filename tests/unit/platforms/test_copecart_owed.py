"""What is owed, rebuilt from CopeCart's IPNs alone: the fixtures' order, as a vendor's IPN URL would see it.

Order CC-1001 is six installments of 50.00 EUR, from 2026-08-01, monthly; installment 3 failed.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from domain.money import Money
from domain.plans import Frequency, InstallmentPlan, InstallmentStatus, PlanError, replacement_plan
from domain.policy import ReplacementKind
from platforms.copecart.owed import (
    FailedInstallmentPaid,
    PlanTerms,
    SeenIpn,
    SeenKind,
    UnseenInstallments,
    read_seen,
    rebuild_plan,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "copecart"
S = InstallmentStatus
REMAINING, SINGLE = ReplacementKind.REMAINING_INSTALLMENTS, ReplacementKind.SINGLE_PAYMENT
TODAY = date(2026, 10, 3)


def ipn(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data | changes


def failed(**changes: Any) -> dict[str, Any]:
    return ipn("payment_failed_breakdown.json", **changes)


def made(rate: int, **changes: Any) -> dict[str, Any]:
    return ipn("payment_made_breakdown.json", rate_number=str(rate), transaction_id=f"T-pay-{rate}") | changes


def refunded(rate: int, **changes: Any) -> dict[str, Any]:
    return ipn("payment_refunded_breakdown.json", rate_number=str(rate), transaction_id=f"T-refund-{rate}") | changes


def charged_back(rate: int, **changes: Any) -> dict[str, Any]:
    return refunded(rate, event_type="payment.charged_back", transaction_type="chargeback",
                    transaction_id=f"T-chargeback-{rate}") | changes


def rebuild(failing: dict[str, Any], *bodies: dict[str, Any], confirmed_paid: tuple[int, ...] = ()) -> InstallmentPlan:
    return rebuild_plan(SeenIpn.from_fields(failing), read_seen(bodies), confirmed_paid=confirmed_paid)


def statuses(plan: InstallmentPlan) -> list[InstallmentStatus]:
    return [i.status for i in plan.installments]


def eur(text: str) -> Money:
    return Money.parse(text, "EUR")


# -- the record of one IPN ------------------------------------------------------------------------------


def test_a_seen_ipn_keeps_what_the_plan_needs_from_the_fixture() -> None:
    seen = SeenIpn.from_fields(ipn("payment_refunded_breakdown.json"))
    assert seen == SeenIpn(
        kind=SeenKind.REFUNDED, order_id="CC-1001", transaction_id="T-90004", rate_number=1, amount=eur("-50.00"),
        terms=PlanTerms(payment_plan="breakdown_payment", total_number_of_payments=6, first_payment=eur("50.00"),
                        next_payments=eur("50.00"), frequency=Frequency.MONTHLY, order_date=date(2026, 8, 1)),
    )


def test_read_seen_keeps_money_events_in_arrival_order_and_reads_the_charge_back_alias() -> None:
    bodies = [made(2), failed(event_type="payment.recurring.cancelled"), failed(event_type="order.created"),
              charged_back(1, event_type="payment.charge_back"), failed()]
    assert [(s.kind, s.rate_number) for s in read_seen(bodies)] == [
        (SeenKind.MADE, 2), (SeenKind.CHARGED_BACK, 1), (SeenKind.FAILED, 3)]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"transaction_id": None}, "transaction_id"),
        ({"order_id": ""}, "order_id"),
        ({"rate_number": None}, "rate_number"),
        ({"rate_number": "0"}, "rate_number"),
        ({"rate_number": "٣"}, "rate_number"),
        ({"rate_number": True}, "rate_number"),
        ({"transaction_amount": 50.0}, "transaction_amount"),
        ({"transaction_amount": "50.001"}, "transaction_amount"),
        ({"transaction_amount": "5" * 40}, "transaction_amount"),
        ({"transaction_currency": "XXX"}, "transaction_currency"),
        ({"transaction_currency": None}, "transaction_currency"),
        ({"total_number_of_payments": "six"}, "total_number_of_payments"),
        ({"first_payment": "fifty"}, "first_payment"),
        ({"frequency": "fortnightly"}, "frequency"),
        ({"order_date": "2026-13-01"}, "order_date"),
        ({"payment_plan": 3}, "payment_plan"),
    ],
)
def test_a_malformed_field_is_named(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(PlanError, match=field):
        SeenIpn.from_fields(failed(**changes))


def test_an_event_that_moves_no_money_is_not_a_seen_ipn() -> None:
    with pytest.raises(PlanError, match=r"payment\.recurring\.cancelled"):
        SeenIpn.from_fields(failed(event_type="payment.recurring.cancelled"))


# -- rebuilding the plan --------------------------------------------------------------------------------


def test_two_payments_seen_then_installment_3_failed_owes_200_eur() -> None:
    plan = rebuild(failed(), made(1), made(2))
    assert plan.currency == "EUR"
    assert plan.frequency is Frequency.MONTHLY
    assert statuses(plan) == [S.PAID, S.PAID, S.FAILED, S.OPEN, S.OPEN, S.OPEN]
    assert [i.amount for i in plan.installments] == [eur("50.00")] * 6
    assert [i.due_date for i in plan.installments] == [
        date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)]
    assert plan.outstanding == eur("200.00")
    remaining = replacement_plan(plan, kind=REMAINING, failed_number=3, today=TODAY)
    assert remaining is not None
    assert [i.amount for i in remaining.installments] == [eur("50.00")] * 4
    single = replacement_plan(plan, kind=SINGLE, failed_number=3, today=TODAY)
    assert single is not None
    assert [i.amount for i in single.installments] == [eur("200.00")]


def test_a_refunded_installment_is_owed_again_and_joins_the_first_of_the_replacement() -> None:
    plan = rebuild(failed(), made(1), made(2), ipn("payment_refunded_breakdown.json"))
    assert statuses(plan) == [S.REFUNDED, S.PAID, S.FAILED, S.OPEN, S.OPEN, S.OPEN]
    assert plan.outstanding == eur("250.00")
    remaining = replacement_plan(plan, kind=REMAINING, failed_number=3, today=TODAY)
    assert remaining is not None
    assert [i.amount for i in remaining.installments] == [eur("100.00"), eur("50.00"), eur("50.00"), eur("50.00")]


def test_a_charge_back_is_owed_again() -> None:
    plan = rebuild(failed(), made(1), made(2), charged_back(2))
    assert statuses(plan) == [S.PAID, S.CHARGED_BACK, S.FAILED, S.OPEN, S.OPEN, S.OPEN]
    assert plan.outstanding == eur("250.00")


def test_arrival_order_and_duplicates_do_not_change_the_plan() -> None:
    in_order = rebuild(failed(), made(1), made(2), refunded(1))
    shuffled = rebuild(failed(), refunded(1), made(2), failed(), made(2), refunded(1), made(1), made(2))
    assert shuffled == in_order


def test_paid_refunded_and_paid_again_is_paid() -> None:
    plan = rebuild(failed(), made(1), refunded(1), made(1, transaction_id="T-pay-1-again"), made(2))
    assert statuses(plan)[:3] == [S.PAID, S.PAID, S.FAILED]
    assert plan.outstanding == eur("200.00")


def test_an_earlier_failure_never_paid_is_owed_and_one_later_paid_is_not() -> None:
    plan = rebuild(failed(), made(1), failed(rate_number="2", transaction_id="T-fail-2"))
    assert statuses(plan) == [S.PAID, S.FAILED, S.FAILED, S.OPEN, S.OPEN, S.OPEN]
    assert plan.outstanding == eur("250.00")
    cured = rebuild(failed(), made(1), failed(rate_number="2", transaction_id="T-fail-2"), made(2))
    assert statuses(cured)[:3] == [S.PAID, S.PAID, S.FAILED]


def test_later_installments_keep_what_was_seen_for_them() -> None:
    plan = rebuild(failed(), made(1), made(2), made(4), made(5), refunded(5),
                   failed(rate_number="6", transaction_id="T-fail-6"))
    assert statuses(plan) == [S.PAID, S.PAID, S.FAILED, S.PAID, S.REFUNDED, S.FAILED]
    assert plan.outstanding == eur("150.00")
    remaining = replacement_plan(plan, kind=REMAINING, failed_number=3, today=TODAY)
    assert remaining is not None
    assert [i.amount for i in remaining.installments] == [eur("50.00")] * 3


def test_an_uneven_first_payment_in_a_zero_decimal_currency() -> None:
    terms = {"first_payment": "12000", "next_payments": "4500", "transaction_currency": "JPY",
             "total_number_of_payments": "4", "order_date": "2026-01-31"}
    plan = rebuild(failed(transaction_amount="4500", **terms),
                   made(1, transaction_amount="12000", **terms), made(2, transaction_amount="4500", **terms))
    assert [i.amount for i in plan.installments] == [Money(12000, "JPY")] + [Money(4500, "JPY")] * 3
    assert [i.due_date for i in plan.installments] == [
        date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]
    assert plan.outstanding == Money(9000, "JPY")


def test_a_single_installment_plan_whose_only_payment_failed() -> None:
    plan = rebuild(failed(total_number_of_payments="1", rate_number="1", next_payments=None, frequency=None))
    assert plan.frequency is None
    assert statuses(plan) == [S.FAILED]
    assert plan.outstanding == eur("50.00")


def test_terms_an_event_does_not_carry_are_not_compared() -> None:
    bare = {"total_number_of_payments": None, "first_payment": None, "next_payments": None, "frequency": None,
            "order_date": None, "payment_plan": None}
    plan = rebuild(failed(), made(1, **bare), made(2, next_payment_at="2027-05-05"))
    assert plan.outstanding == eur("200.00")


# -- what goes to a person ------------------------------------------------------------------------------


def test_an_earlier_installment_with_nothing_seen_goes_to_a_person_naming_it() -> None:
    with pytest.raises(UnseenInstallments, match="installment 1 before the failed installment 3") as caught:
        rebuild(failed(), made(2))
    assert caught.value.installments == (1,)
    with pytest.raises(UnseenInstallments, match="installments 1, 2 before") as caught:
        rebuild(failed())
    assert caught.value.installments == (1, 2)


def test_a_person_who_found_them_paid_in_copecart_lets_the_rest_decide() -> None:
    plan = rebuild(failed(), confirmed_paid=(1, 2))
    assert statuses(plan) == [S.PAID, S.PAID, S.FAILED, S.OPEN, S.OPEN, S.OPEN]
    assert rebuild(failed(), made(1), confirmed_paid=(1, 2)) == plan
    refunded_after = rebuild(failed(), refunded(1), confirmed_paid=(1, 2))
    assert statuses(refunded_after)[:3] == [S.REFUNDED, S.PAID, S.FAILED]
    with pytest.raises(PlanError, match="paid 2 times"):
        rebuild(failed(), made(1), made(1, transaction_id="T-again"), confirmed_paid=(1, 2))


@pytest.mark.parametrize("confirmed", [(3,), (4,), (0,), (7,)])
def test_only_installments_before_the_failed_one_can_be_confirmed_paid(confirmed: tuple[int, ...]) -> None:
    with pytest.raises(PlanError, match="can be confirmed paid"):
        rebuild(failed(), made(1), made(2), confirmed_paid=confirmed)


def test_a_payment_of_the_failed_installment_means_nothing_is_owed_for_it() -> None:
    with pytest.raises(FailedInstallmentPaid, match="failed installment 3 was paid"):
        rebuild(failed(), made(1), made(2), made(3))
    # Paid after failing, then refunded: owed again.
    plan = rebuild(failed(), made(1), made(2), made(3), refunded(3))
    assert statuses(plan)[:3] == [S.PAID, S.PAID, S.FAILED]


@pytest.mark.parametrize(
    ("history", "reason"),
    [
        ([made(1, transaction_amount="45.00"), made(2)], "45.00 EUR, but installment 1 of the plan is 50.00 EUR"),
        ([made(1), made(2, transaction_amount="0.00")], "a payment must be a positive amount"),
        ([made(1), made(2, transaction_amount="-50.00")], "a payment must be a positive amount"),
        ([made(1), made(2), refunded(1, transaction_amount="-20.00")], "amounts do not add up"),
        ([made(1), made(2), refunded(1, transaction_amount="0.00")], "amounts do not add up"),
        ([made(1), made(2), made(7)], "installment 7, beyond the plan's 6"),
        ([made(1), made(2, total_number_of_payments="5")], "total_number_of_payments 5"),
        ([made(1, first_payment="40.00"), made(2)], "first_payment 40.00 EUR"),
        ([made(1), made(2, next_payments="60.00")], "next_payments 60.00 EUR"),
        ([made(1), made(2, frequency="weekly")], "frequency weekly"),
        ([made(1), made(2, order_date="2026-08-02")], "order_date 2026-08-02"),
        ([made(1), made(2, payment_plan="one_time_payment")], "payment_plan one_time_payment"),
        ([made(1), made(2, transaction_currency="USD")], "mixed currencies"),
        ([made(1), made(2), refunded(1, transaction_currency="CHF")], "mixed currencies"),
        ([made(1), made(2), refunded(4)], "installment 4 was refunded or charged back"),
        ([made(2), made(1), charged_back(3)], "installment 3 was refunded or charged back"),
        ([made(1), made(2), refunded(1), charged_back(1)], "given back 2 times"),
        ([made(1), made(2), made(2, transaction_id="T-pay-2-again")], "paid 2 times"),
        ([made(1), made(2), made(2, rate_number="4")], "seen twice with different contents"),
        ([made(1), made(2, order_id="CC-9999")], "for order CC-9999, not CC-1001"),
    ],
)
def test_a_history_that_does_not_add_up_goes_to_a_person(history: list[dict[str, Any]], reason: str) -> None:
    with pytest.raises(PlanError, match=reason):
        rebuild(failed(), *history)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"transaction_amount": "45.00"}, "amounts do not add up"),
        ({"rate_number": "7"}, "beyond the plan's 6"),
        ({"total_number_of_payments": None}, "does not carry total_number_of_payments"),
        ({"first_payment": None}, "does not carry first_payment"),
        ({"next_payments": None}, "does not carry next_payments"),
        ({"frequency": None}, "does not carry frequency"),
        ({"order_date": None}, "does not carry order_date"),
        ({"first_payment": "0.00"}, "first_payment must be a positive amount"),
        ({"next_payments": "-5.00"}, "next_payments must be a positive amount"),
        ({"total_number_of_payments": "0"}, "total_number_of_payments"),
        ({"event_type": "payment.made"}, "not a failed payment"),
    ],
)
def test_a_failing_event_that_does_not_describe_a_plan_is_refused(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(PlanError, match=reason):
        rebuild(failed(**changes), made(1), made(2))


def test_a_failed_one_time_payment_has_no_plan_to_continue() -> None:
    with pytest.raises(PlanError, match="one_time_payment, not an installment plan"):
        rebuild(ipn("payment_failed_one_time.json"))
