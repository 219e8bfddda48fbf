"""Why a case waits for a person, as a stable code with parameters beside the free text, and what the summary
makes of them: emails word the code in the vendor's language, operators keep the text."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.case import CaseState, DunningCase, RetryPolicy, Step
from domain.money import Money
from domain.plans import InstallmentStatus
from domain.summary import PersonCase, person_case, summarise
from tests.unit.domain.test_case import (
    BUYER,
    TODAY,
    at,
    awaiting_payment,
    opened,
    original,
    original_cancelled,
    planned,
    replacement_created,
)

POLICY = RetryPolicy(max_attempts=3)


def test_a_step_refused_for_good_is_its_steps_code_with_the_attempts() -> None:
    case = planned()
    case.step_failed(Step.CREATE_REPLACEMENT, error="Rejected: 422 product is archived", transient=False, now=at(5),
                     policy=POLICY, jitter=0.0)

    assert case.state is CaseState.NEEDS_PERSON
    assert (case.reason_code, case.reason_params) == ("create_replacement_failed", {"attempts": 1})
    assert case.reason == "create_replacement failed: Rejected: 422 product is archived"  # the text stays
    assert case.events[-1].detail["code"] == "create_replacement_failed"


@pytest.mark.parametrize(("make", "step", "code"), [
    (replacement_created, Step.CANCEL_ORIGINAL, "platform_unavailable"),
    (original_cancelled, Step.SEND_LINK, "mail_server_unavailable"),
])
def test_a_step_that_kept_failing_names_what_did_not_answer(make: object, step: Step, code: str) -> None:
    case = make()  # type: ignore[operator]
    for attempt in range(POLICY.max_attempts):
        case.step_failed(step, error="503", transient=True, now=at(10 + attempt), policy=POLICY, jitter=0.0)

    assert (case.reason_code, case.reason_params) == (code, {"attempts": 3})


def test_a_caller_may_name_a_failure_more_precisely() -> None:
    case = planned()
    case.step_failed(Step.CREATE_REPLACEMENT, error="outside its own host", transient=False, now=at(5), policy=POLICY,
                     jitter=0.0, code="payment_url_untrusted", params={"host": "evil.example"})

    assert (case.reason_code, case.reason_params) == ("payment_url_untrusted", {"attempts": 1, "host": "evil.example"})


def test_payments_to_reconcile_carry_their_amount_and_installment() -> None:
    twice = replacement_created()
    twice.original_paid(installment=3, now=at(5))
    twice.replacement_paid(amount=Money(4900, "EUR"), now=at(6))
    late = awaiting_payment()
    late.original_paid(installment=3, now=at(7))
    charged = awaiting_payment()
    charged.installment_refunded(installment=2, status=InstallmentStatus.CHARGED_BACK, now=at(8))

    assert (twice.reason_code, twice.reason_params) == ("paid_twice", {"amount": 4900})
    assert (late.reason_code, late.reason_params) == ("paid_after_cancel", {"installment": 3})
    assert (charged.reason_code, charged.reason_params) == ("charged_back_after_replacement", {"installment": 2})


@pytest.mark.parametrize(("status", "code"), [("cancelled", "original_cancelled"), ("completed", "original_completed"),
                                              ("archived", "original_inactive")])
def test_an_original_that_is_not_active_says_how(status: str, code: str) -> None:
    case = opened()
    case.plan(original(), order_vendor=case.vendor, order_status=status, buyer=BUYER, product_id="p-42",
              product_name="Coaching Program", today=TODAY, now=at(1))

    assert (case.reason_code, case.reason_params) == (code, {"status": status})


def test_retry_and_closing_clear_the_code_with_the_reason() -> None:
    case = planned()
    case.step_failed(Step.CREATE_REPLACEMENT, error="422", transient=False, now=at(5), policy=POLICY, jitter=0.0)
    case.retry(now=at(6))
    assert (case.reason, case.reason_code, case.reason_params) == (None, None, {})

    case.step_failed(Step.CREATE_REPLACEMENT, error="422", transient=False, now=at(7), policy=POLICY, jitter=0.0)
    case.resolve(note="made the link by hand", now=at(8))
    assert (case.reason, case.reason_code, case.reason_params) == (None, None, {})


def test_the_summary_gives_amounts_as_money_of_the_cases_currency() -> None:
    twice = replacement_created()
    twice.original_paid(installment=3, now=at(5))
    twice.replacement_paid(amount=Money(4900, "EUR"), now=at(6))

    assert person_case(twice) == PersonCase(twice.id, "CC-1001", "paid_twice", {"amount": Money(4900, "EUR")})


@pytest.mark.parametrize("amount", ["49.00", True, 4.9])
def test_an_amount_that_is_not_minor_units_is_left_out_rather_than_shown_wrong(amount: object) -> None:
    case = replacement_created()
    case.original_paid(installment=3, now=at(5))
    case.replacement_paid(amount=Money(4900, "EUR"), now=at(6))
    case.reason_params = {"amount": amount}

    assert person_case(case).params == {}


def test_a_case_handed_over_before_codes_has_none() -> None:
    case = planned()
    case.step_failed(Step.CREATE_REPLACEMENT, error="422", transient=False, now=at(5), policy=POLICY, jitter=0.0)
    case.reason_code, case.reason_params = None, {}
    [shown] = summarise([case], today=date(2026, 10, 2), zone=ZoneInfo("Europe/Berlin"), currency="EUR").needs_person

    assert shown == PersonCase(case.id, "CC-1001", None, {})


def test_the_code_survives_a_snapshot() -> None:
    case = planned()
    case.step_failed(Step.CREATE_REPLACEMENT, error="422", transient=False, now=at(5) + timedelta(seconds=1),
                     policy=POLICY, jitter=0.0)
    copy: DunningCase = case.snapshot()

    assert (copy.reason_code, copy.reason_params) == ("create_replacement_failed", {"attempts": 1})
