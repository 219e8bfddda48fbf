"""The case after the link: reminders, final notice and expiry over days; grace; refunds; plan cancellation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from domain.case import Buyer, CaseError, CaseState, DunningCase, Step
from domain.money import Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from domain.policy import ReplacementKind

T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
BUYER = Buyer("anna@example.com", "Anna", "Meier", "DE", "b-7")


def _original(paid: int = 2) -> InstallmentPlan:
    return InstallmentPlan("EUR", Frequency.MONTHLY, tuple(
        Installment(n, Money(5000, "EUR"), date(2026, n, 1),
                    InstallmentStatus.PAID if n <= paid else InstallmentStatus.OPEN) for n in range(1, 7)))


def _case(*, grace: timedelta = timedelta(0)) -> DunningCase:
    return DunningCase.open(case_id="c1", vendor="acme", original_order_id="CC-1", failed_installment=3,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=T0, reminder_days=(3, 7),
                            expire_after_days=14, grace=grace)


def _awaiting() -> DunningCase:
    case = _case()
    case.plan(_original(), order_vendor="acme",
              order_status="active", buyer=BUYER, product_id="p", product_name="P", today=T0.date(),
              now=T0)
    case.replacement_created(order_id="R-1", payment_url="http://127.0.0.1:8090/pay/R-1", now=T0)
    case.original_cancelled(now=T0)
    case.link_sent(now=T0)
    return case


def test_reminders_then_final_notice_then_expiry_fall_due_on_their_days() -> None:
    case = _awaiting()
    seen = []
    for day in range(0, 16):
        now = T0 + timedelta(days=day, minutes=1)
        while case.is_due(now):
            step = case.next_step
            seen.append((day, step, case.email_key(step) if step and step.is_email else None))
            if step is Step.SEND_REMINDER:
                case.reminder_sent(now=now)
            elif step is Step.SEND_FINAL_NOTICE:
                case.final_notice_done(now=now)
            else:
                case.expired(now=now)
    assert seen == [(3, Step.SEND_REMINDER, "reminder_1"), (7, Step.SEND_REMINDER, "reminder_2"),
                    (13, Step.SEND_FINAL_NOTICE, "final_notice"), (14, Step.EXPIRE, None)]
    assert case.state is CaseState.LOST
    assert case.closed_at == T0 + timedelta(days=14, minutes=1)


def test_nothing_is_due_between_the_days_and_a_paid_case_has_no_more_steps() -> None:
    case = _awaiting()
    assert not case.is_due(T0 + timedelta(days=2, hours=23))
    assert case.is_due(T0 + timedelta(days=3))
    case.replacement_paid(amount=Money(5000, "EUR"), now=T0 + timedelta(days=5))
    assert case.state is CaseState.RECOVERED
    assert case.next_step is None
    assert not case.is_due(T0 + timedelta(days=30))


def test_a_lifecycle_step_out_of_turn_raises() -> None:
    case = _awaiting()
    with pytest.raises(CaseError):
        case.expired(now=T0)
    with pytest.raises(CaseError):
        case.final_notice_done(now=T0)


def test_no_final_notice_when_the_last_reminder_is_the_day_before_expiry() -> None:
    case = DunningCase.open(case_id="c2", vendor="acme", original_order_id="CC-2", failed_installment=3,
                            replacement_kind=ReplacementKind.SINGLE_PAYMENT, now=T0, reminder_days=(3, 13),
                            expire_after_days=14)
    case.plan(_original(), order_vendor="acme",
              order_status="active", buyer=BUYER, product_id="p", product_name="P", today=T0.date(),
              now=T0)
    case.replacement_created(order_id="R-2", payment_url="http://x/pay/R-2", now=T0)
    case.original_cancelled(now=T0)
    case.link_sent(now=T0)
    case.reminder_sent(now=T0 + timedelta(days=3))
    case.reminder_sent(now=T0 + timedelta(days=13))
    assert case.next_step is Step.EXPIRE
    assert case.next_attempt_at == T0 + timedelta(days=14)


def test_within_the_grace_nothing_is_due_and_a_payment_closes_the_case_without_effect() -> None:
    case = _case(grace=timedelta(hours=24))
    assert case.next_step is Step.FETCH_ORIGINAL
    assert not case.is_due(T0 + timedelta(hours=23))
    assert case.is_due(T0 + timedelta(hours=24))
    case.original_paid(installment=3, now=T0 + timedelta(hours=5))
    assert case.state is CaseState.RESOLVED
    assert case.replacement_order_id is None
    assert case.next_step is None


def test_a_refund_before_planning_is_owed_again_in_the_replacement() -> None:
    case = _case()
    case.installment_refunded(installment=1, status=InstallmentStatus.REFUNDED, now=T0)
    case.plan(_original(), order_vendor="acme",
              order_status="active", buyer=BUYER, product_id="p", product_name="P", today=T0.date(),
              now=T0)
    assert case.outstanding == Money(25000, "EUR")
    assert case.replacement is not None
    assert [i.amount.minor for i in case.replacement.installments] == [10000, 5000, 5000, 5000]


def test_a_charge_back_after_planning_but_before_the_create_replans() -> None:
    case = _case()
    case.plan(_original(), order_vendor="acme",
              order_status="active", buyer=BUYER, product_id="p", product_name="P", today=T0.date(),
              now=T0)
    case.installment_refunded(installment=2, status=InstallmentStatus.CHARGED_BACK, now=T0)
    assert case.state is CaseState.OPEN
    assert case.next_step is Step.FETCH_ORIGINAL
    case.plan(_original(), order_vendor="acme",
              order_status="active", buyer=BUYER, product_id="p", product_name="P", today=T0.date(),
              now=T0)
    assert case.outstanding == Money(25000, "EUR")


def test_a_refund_after_the_replacement_exists_goes_to_a_person() -> None:
    case = _awaiting()
    case.installment_refunded(installment=1, status=InstallmentStatus.REFUNDED, now=T0 + timedelta(days=1))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason == "refund of installment 1 after the replacement was made: adjust the replacement by hand"
    assert case.next_step is None


def test_the_plan_cancelled_on_the_platform_closes_an_early_case_and_withdraws_a_replacement() -> None:
    early = _case()
    early.plan_cancelled(now=T0)
    assert early.state is CaseState.RESOLVED

    made = _case()
    made.plan(_original(), order_vendor="acme",
              order_status="active", buyer=BUYER, product_id="p", product_name="P", today=T0.date(),
              now=T0)
    made.replacement_created(order_id="R-1", payment_url="http://x/pay/R-1", now=T0)
    made.plan_cancelled(now=T0)
    assert made.next_step is Step.CANCEL_REPLACEMENT
    made.replacement_cancelled(now=T0)
    assert made.state is CaseState.RESOLVED

    # dunlink cancelled the original itself: the platform's report of it does not stop the dunning.
    awaiting = _awaiting()
    awaiting.plan_cancelled(now=T0)
    assert awaiting.state is CaseState.AWAITING_PAYMENT
