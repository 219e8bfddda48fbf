"""A case whose vendor makes the replacement by hand in CopeCart: the safe order of the vendor's clicks."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from domain.case import (
    REASON_CANNOT_GENERATE_LINK,
    REASON_VENDOR_DID_NOT_ACT,
    Buyer,
    CaseError,
    CaseState,
    DunningCase,
    LinkAlreadySent,
    Step,
)
from domain.money import Money
from domain.plans import InstallmentPlan
from domain.policy import ReplacementBy, ReplacementKind

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "copecart"
T0 = datetime(2026, 10, 1, 8, 0, 5, tzinfo=UTC)
DAY = timedelta(days=1)
BUYER = Buyer(email="anna@example.com", first_name="Anna", last_name="Meier", country_code="DE", id="b-7")
LINK = "https://checkout.copecart.com/pay/CC-77?x=1"


def original() -> InstallmentPlan:
    return InstallmentPlan.from_ipn(json.loads((FIXTURES / "payment_failed_breakdown.json").read_text()))


def tasked(*, expire_after_days: int = 14) -> DunningCase:
    """Installment 3 of 6 failed; the vendor has its task email."""
    case = DunningCase.open(case_id="case-v", vendor="acme", original_order_id="CC-1001", failed_installment=3,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=T0, reminder_days=(3, 7),
                            expire_after_days=expire_after_days, replacement_by=ReplacementBy.VENDOR)
    assert case.next_step is Step.PLAN_FROM_IPNS
    case.plan(original(), order_vendor="acme", order_status="active", buyer=BUYER, product_id="p-42",
              product_name="Coaching Program", today=date(2026, 10, 1), now=T0)
    assert case.state is CaseState.PLANNED and case.next_step is Step.SEND_VENDOR_TASK
    assert case.next_step.is_email and case.next_step.to_vendor
    case.vendor_task_sent(now=T0)
    return case


def test_the_buyer_is_emailed_only_once_the_link_is_recorded_and_the_original_known_cancelled() -> None:
    case = tasked()
    assert case.state is CaseState.AWAITING_VENDOR_LINK and case.vendor_waiting_for == "link"
    assert case.next_step is Step.SEND_VENDOR_REMINDER and case.next_attempt_at == T0 + DAY

    assert case.link_given(payment_url=LINK, order_id="CC-77", now=T0 + timedelta(hours=1))
    assert case.state is CaseState.AWAITING_ORIGINAL_CANCEL and case.next_step is Step.SEND_VENDOR_REMINDER
    assert case.vendor_waiting_for == "original_cancelled"

    assert case.original_cancel_known(now=T0 + timedelta(hours=2), by="vendor_page")
    assert case.state is CaseState.ORIGINAL_CANCELLED and case.next_step is Step.SEND_LINK
    case.link_sent(now=T0 + timedelta(hours=2))
    assert case.state is CaseState.AWAITING_PAYMENT and case.next_step is Step.SEND_REMINDER
    case.replacement_paid(amount=Money(20000, "EUR"), now=T0 + timedelta(days=2))
    assert case.state is CaseState.RECOVERED and case.recovered_minor == 20000


def test_cancelled_first_then_the_link_goes_straight_to_the_buyer_email() -> None:
    case = tasked()
    assert case.original_cancel_known(now=T0, by="cli")
    assert case.state is CaseState.AWAITING_VENDOR_LINK  # still the link
    assert not case.original_cancel_known(now=T0, by="ipn")  # known once
    case.link_given(payment_url=LINK, order_id=None, now=T0)
    assert case.state is CaseState.ORIGINAL_CANCELLED


def test_cancellation_ipn_after_the_task_counts_as_known_cancelled() -> None:
    case = tasked()
    case.link_given(payment_url=LINK, order_id=None, now=T0)
    case.plan_cancelled(now=T0 + timedelta(minutes=5))
    assert case.original_known_cancelled and case.state is CaseState.ORIGINAL_CANCELLED


def test_the_same_link_again_changes_nothing_another_replaces_it_until_the_buyer_was_emailed() -> None:
    case = tasked()
    assert case.link_given(payment_url=LINK, order_id=None, now=T0)
    assert not case.link_given(payment_url=LINK, order_id=None, now=T0)
    other = "https://checkout.copecart.com/pay/CC-78"
    assert case.link_given(payment_url=other, order_id="CC-78", now=T0)
    assert case.payment_url == other and case.replacement_order_id == "CC-78"
    case.original_cancel_known(now=T0, by="vendor_page")
    case.link_sent(now=T0)
    assert not case.link_given(payment_url=other, order_id=None, now=T0)
    with pytest.raises(LinkAlreadySent):
        case.link_given(payment_url=LINK, order_id=None, now=T0)


def test_cannot_generate_waits_for_a_person_and_a_link_later_resumes() -> None:
    case = tasked()
    case.cannot_generate_link(now=T0)
    assert case.state is CaseState.NEEDS_PERSON and case.reason_code == REASON_CANNOT_GENERATE_LINK
    assert case.cannot_generate and case.next_step is None
    case.cannot_generate_link(now=T0)  # pressed twice: nothing more
    case.link_given(payment_url=LINK, order_id=None, now=T0 + DAY)
    assert case.state is CaseState.AWAITING_ORIGINAL_CANCEL and case.reason is None and not case.cannot_generate


def test_the_original_paid_while_waiting_tells_the_vendor_to_deactivate_the_link() -> None:
    case = tasked()
    case.link_given(payment_url=LINK, order_id=None, now=T0)
    case.original_paid(installment=3, amount=Money(5000, "EUR"), now=T0 + DAY)
    assert case.state is CaseState.DEACTIVATING_LINK and case.next_step is Step.SEND_DEACTIVATE_LINK
    case.link_to_deactivate_told(now=T0 + DAY)
    assert case.state is CaseState.RESOLVED


def test_at_expiry_the_vendor_is_told_to_deactivate_the_link_and_the_case_is_lost() -> None:
    case = tasked(expire_after_days=8)
    case.link_given(payment_url=LINK, order_id=None, now=T0)
    case.original_cancel_known(now=T0, by="vendor_page")
    case.link_sent(now=T0)
    case.reminder_sent(now=T0 + 3 * DAY)
    case.reminder_sent(now=T0 + 7 * DAY)
    assert case.next_step is Step.EXPIRE
    case.expired(now=T0 + 8 * DAY)
    assert case.state is CaseState.DEACTIVATING_LINK and case.next_step is Step.SEND_DEACTIVATE_LINK
    case.link_to_deactivate_told(now=T0 + 8 * DAY)
    assert case.state is CaseState.LOST


def test_a_vendor_reminded_every_day_who_never_acts_is_followed_up_by_a_person() -> None:
    case = tasked(expire_after_days=4)
    for day in range(1, 4):
        assert case.next_step is Step.SEND_VENDOR_REMINDER and case.next_attempt_at == T0 + day * DAY
        case.vendor_reminder_sent(now=T0 + day * DAY)
        assert case.email_key(Step.SEND_VENDOR_REMINDER) == f"vendor_reminder_{day + 1}"
    assert case.next_step is Step.VENDOR_OVERDUE
    case.vendor_overdue(now=T0 + 4 * DAY)
    assert case.state is CaseState.NEEDS_PERSON and case.reason_code == REASON_VENDOR_DID_NOT_ACT


def test_paid_before_the_original_was_known_cancelled_is_recovered_once_it_is() -> None:
    case = tasked()
    case.link_given(payment_url=LINK, order_id="CC-77", now=T0)
    case.replacement_paid(amount=Money(20000, "EUR"), now=T0 + DAY)
    assert case.state is CaseState.AWAITING_ORIGINAL_CANCEL
    case.original_cancel_known(now=T0 + DAY, by="ipn")
    assert case.state is CaseState.RECOVERED and case.recovered_minor == 20000


def test_the_vendors_actions_are_refused_for_a_case_made_through_the_order_api() -> None:
    case = DunningCase.open(case_id="case-a", vendor="acme", original_order_id="CC-1", failed_installment=1,
                            replacement_kind=ReplacementKind.SINGLE_PAYMENT, now=T0)
    assert case.next_step is Step.FETCH_ORIGINAL
    with pytest.raises(CaseError):
        case.link_given(payment_url=LINK, order_id=None, now=T0)
    with pytest.raises(CaseError):
        case.original_cancel_known(now=T0, by="cli")
