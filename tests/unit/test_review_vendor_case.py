"""A vendor-made case under review: what the vendor, CopeCart, the buyer and a person can do to it, in any
order, and what the buyer must never see (an email before both the link and the cancellation are known, two
emails, two different links), and the ways a case can get stuck with both known or close with money unseen."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from domain.case import (
    REASON_PAID_AFTER_CANCEL,
    Buyer,
    CaseError,
    CaseState,
    DunningCase,
    LinkAlreadySent,
    RetryPolicy,
    Step,
)
from domain.money import Money
from domain.plans import InstallmentPlan
from domain.policy import ReplacementBy, ReplacementKind

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "copecart"
T0 = datetime(2026, 10, 1, 8, 0, 5, tzinfo=UTC)
DAY = timedelta(days=1)
BUYER = Buyer(email="anna@example.com", first_name="Anna", last_name="Meier", country_code="DE", id="b-7")
LINK = "https://checkout.copecart.com/pay/CC-77"
OTHER_LINK = "https://checkout.copecart.com/pay/CC-78"


def original() -> InstallmentPlan:
    return InstallmentPlan.from_ipn(json.loads((FIXTURES / "payment_failed_breakdown.json").read_text()))


def tasked(*, expire_after_days: int | None = 14) -> DunningCase:
    """Installment 3 of 6 (50.00 EUR each) failed; the vendor has its task email."""
    case = DunningCase.open(case_id="case-r", vendor="hooli", original_order_id="CC-1001", failed_installment=3,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=T0, reminder_days=(3, 7),
                            expire_after_days=expire_after_days, replacement_by=ReplacementBy.VENDOR)
    case.plan(original(), order_vendor="hooli", order_status="active", buyer=BUYER, product_id="p-42",
              product_name="Coaching Program", today=date(2026, 10, 1), now=T0)
    case.vendor_task_sent(now=T0)
    return case


def remind_until_overdue(case: DunningCase) -> datetime:
    """Every daily reminder, then the hand-over to a person; returns when that happened."""
    day = 1
    while case.next_step is Step.SEND_VENDOR_REMINDER:
        assert case.next_attempt_at == T0 + day * DAY
        case.vendor_reminder_sent(now=T0 + day * DAY)
        day += 1
    assert case.next_step is Step.VENDOR_OVERDUE and case.next_attempt_at == T0 + day * DAY
    case.vendor_overdue(now=T0 + day * DAY)
    assert case.state is CaseState.NEEDS_PERSON
    return T0 + day * DAY


# -- defects: each of these fails on the code as it is ------------------------------------------------------


@pytest.mark.parametrize("by", ["vendor_page", "cli", "ipn"])
def test_overdue_with_the_link_then_the_original_cancelled_goes_on_to_the_buyers_email(by: str) -> None:
    """The vendor pasted the link but confirmed the cancellation only after the case went to a person: now both
    are known, and the buyer's email must follow (the CLI's own help says a person finishes the vendor's part
    with ``cases link`` / ``cases original-cancelled``). Today the case stays with a person, and ``cases retry``
    only hands it over again as overdue."""
    case = tasked()
    case.link_given(payment_url=LINK, order_id=None, now=T0 + timedelta(hours=1))
    overdue_at = remind_until_overdue(case)

    later = overdue_at + timedelta(hours=2)
    if by == "ipn":
        case.plan_cancelled(now=later)
    else:
        case.original_cancel_known(now=later, by=by)

    assert case.original_known_cancelled
    assert case.state is CaseState.ORIGINAL_CANCELLED and case.next_step is Step.SEND_LINK


def test_retry_of_an_overdue_case_with_both_known_does_not_hand_it_over_again() -> None:
    case = tasked()
    case.link_given(payment_url=LINK, order_id=None, now=T0)
    overdue_at = remind_until_overdue(case)
    case.original_cancel_known(now=overdue_at, by="cli")
    if case.state is CaseState.NEEDS_PERSON:
        case.retry(now=overdue_at + DAY)
    assert case.next_step is Step.SEND_LINK, (case.state, case.next_step)


def test_the_original_paid_after_the_vendor_said_it_was_cancelled_goes_to_a_person() -> None:
    """The vendor cancelled the original first (it has no link yet); then CopeCart reports the failed installment
    paid on that original after all. The original's later installments are now owed with no order to collect
    them: as for a case whose original dunlink cancelled itself, a person reconciles. Today the case closes as
    resolved and nobody hears of it."""
    case = tasked()
    case.original_cancel_known(now=T0 + timedelta(hours=1), by="vendor_page")
    case.original_paid(installment=3, amount=Money(5000, "EUR"), now=T0 + timedelta(hours=2))
    assert case.state is CaseState.NEEDS_PERSON and case.reason_code == REASON_PAID_AFTER_CANCEL


def test_a_link_cannot_change_once_the_buyers_email_may_have_gone_out() -> None:
    """Sending the buyer's email kept failing as transient (an SMTP timeout may come after the server accepted the
    message), so the case went to a person with the buyer perhaps holding the first link. Another link now must
    be refused as after a sent email (409), not sent under the same Message-ID as the first."""
    case = tasked()
    case.link_given(payment_url=LINK, order_id=None, now=T0)
    case.original_cancel_known(now=T0, by="vendor_page")
    assert case.next_step is Step.SEND_LINK
    policy = RetryPolicy()
    now = T0
    while case.state is not CaseState.NEEDS_PERSON:
        case.step_failed(Step.SEND_LINK, error="TimeoutError: after DATA", transient=True, now=now, policy=policy,
                         jitter=0.0)
        now += timedelta(minutes=5)
    with pytest.raises(LinkAlreadySent):
        case.link_given(payment_url=OTHER_LINK, order_id=None, now=now)
    assert case.payment_url == LINK


def test_a_case_a_payment_was_wrongly_thought_to_fit_can_go_back_to_waiting_for_its_buyer() -> None:
    """A payment fitted two cases of one buyer and product; a person found it paid the other one. This case still
    waits for its buyer: 'cases retry' must put it back to awaiting payment with its reminders and expiry (there
    is no other command that could). Today it stays with a person for good: no failed step to retry."""
    case = tasked()
    case.link_given(payment_url=LINK, order_id=None, now=T0)
    case.original_cancel_known(now=T0, by="vendor_page")
    case.link_sent(now=T0)
    case.payment_ambiguous(order_id="CC-900009", candidates=2, now=T0 + DAY)
    assert case.reason_code == "payment_ambiguous"

    case.retry(now=T0 + 2 * DAY)
    assert case.state is CaseState.AWAITING_PAYMENT and case.next_step is Step.SEND_REMINDER
    assert case.next_attempt_at == T0 + 3 * DAY


# -- guarantees that hold ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("expire_after_days", "days"), [(14, 14), (None, 14), (1, 2), (3, 3)])
def test_the_vendor_is_reminded_daily_from_the_task_then_a_person_follows_up(
        expire_after_days: int | None, days: int) -> None:
    case = tasked(expire_after_days=expire_after_days)
    assert remind_until_overdue(case) == T0 + days * DAY
    assert case.vendor_reminders_sent == days - 1
    assert case.reason_params == {"waiting_for": "link", "days": days}


def test_a_late_reminder_does_not_move_the_vendors_schedule() -> None:
    case = tasked()
    case.vendor_reminder_sent(now=T0 + DAY + timedelta(hours=5))  # the worker was late
    assert case.next_attempt_at == T0 + 2 * DAY


def test_the_link_given_while_a_reminder_is_due_keeps_the_daily_schedule_and_waits_for_the_cancel() -> None:
    case = tasked()
    case.link_given(payment_url=LINK, order_id="CC-77", now=T0 + DAY + timedelta(hours=1))
    assert case.state is CaseState.AWAITING_ORIGINAL_CANCEL
    assert case.next_step is Step.SEND_VENDOR_REMINDER and case.next_attempt_at == T0 + DAY


def test_a_cancellation_before_the_task_email_waits_for_the_task_and_the_link() -> None:
    case = DunningCase.open(case_id="case-p", vendor="hooli", original_order_id="CC-1001", failed_installment=3,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=T0,
                            replacement_by=ReplacementBy.VENDOR, expire_after_days=14)
    case.plan(original(), order_vendor="hooli", order_status="active", buyer=BUYER, product_id="p-42",
              product_name="Coaching Program", today=date(2026, 10, 1), now=T0)
    assert case.original_cancel_known(now=T0, by="cli")
    assert case.link_given(payment_url=LINK, order_id=None, now=T0)
    assert case.next_step is Step.SEND_VENDOR_TASK  # the task first
    case.vendor_task_sent(now=T0)
    assert case.state is CaseState.ORIGINAL_CANCELLED


def test_nothing_the_vendor_does_after_the_case_ended_reopens_it() -> None:
    case = tasked()
    case.link_given(payment_url=LINK, order_id=None, now=T0)
    case.original_paid(installment=3, amount=Money(5000, "EUR"), now=T0)
    case.link_to_deactivate_told(now=T0)
    assert case.state is CaseState.RESOLVED
    with pytest.raises(LinkAlreadySent):
        case.link_given(payment_url=OTHER_LINK, order_id=None, now=T0)
    with pytest.raises(CaseError):
        case.cannot_generate_link(now=T0)
    case.original_cancel_known(now=T0, by="vendor_page")
    assert case.state is CaseState.RESOLVED and case.next_step is None


def test_a_payment_on_the_vendors_order_before_the_cancel_is_known_is_not_followed_by_a_buyer_email() -> None:
    case = tasked()
    case.link_given(payment_url=LINK, order_id="CC-77", now=T0)
    case.replacement_paid(amount=Money(5000, "EUR"), now=T0 + DAY)
    case.original_cancel_known(now=T0 + 2 * DAY, by="ipn")
    assert case.state is CaseState.RECOVERED and case.next_step is None and case.link_sent_at is None


# -- the buyer's email, whatever happens in whatever order ----------------------------------------------------


class VendorCase(RuleBasedStateMachine):
    """The vendor's clicks, CopeCart's IPNs, the workers' steps and a person's retries, interleaved at random.

    Whatever the order: the buyer's email is due only with a link recorded and the original known cancelled,
    it is sent at most once, and once it was sent the link never changes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.case = tasked()
        self.now = T0
        self.sent_link: str | None = None
        self.buyer_emails = 0

    def _tick(self) -> datetime:
        self.now += timedelta(hours=7)
        return self.now

    @rule(url=st.sampled_from([LINK, OTHER_LINK]), order_id=st.sampled_from([None, "CC-77", "CC-78"]))
    def vendor_pastes_a_link(self, url: str, order_id: str | None) -> None:
        try:
            self.case.link_given(payment_url=url, order_id=order_id, now=self._tick())
        except LinkAlreadySent:
            # Refused once the buyer's email may have gone out (sent, or being sent: a retry of the send, or a
            # person holding a case whose send kept failing) and once the case is over.
            assert self.case.link_sent_at is not None or self.case.is_closed or \
                self.case.state in (CaseState.ORIGINAL_CANCELLED, CaseState.DEACTIVATING_LINK,
                                    CaseState.CANCELLING_REPLACEMENT) or \
                self.case.resume_state is CaseState.ORIGINAL_CANCELLED or self.case.failed_step is Step.SEND_LINK

    @rule(by=st.sampled_from(["vendor_page", "cli"]))
    def vendor_confirms_the_cancel(self, by: str) -> None:
        self.case.original_cancel_known(now=self._tick(), by=by)

    @rule()
    def copecart_reports_the_plan_cancelled(self) -> None:
        self.case.plan_cancelled(now=self._tick())

    @rule()
    def vendor_cannot_generate(self) -> None:
        with contextlib.suppress(CaseError):
            self.case.cannot_generate_link(now=self._tick())

    @rule()
    def original_paid(self) -> None:
        self.case.original_paid(installment=3, amount=Money(5000, "EUR"), now=self._tick())

    @rule()
    def replacement_paid(self) -> None:
        if self.case.replacement_order_id is not None:  # only an order the vendor named can be found by its id
            self.case.replacement_paid(amount=Money(5000, "EUR"), now=self._tick())

    @precondition(lambda self: self.case.next_step is not None)
    @rule(fails=st.booleans())
    def worker_performs_the_next_step(self, fails: bool) -> None:
        case, now = self.case, self._tick()
        step = case.next_step
        assert step is not None
        if fails:
            case.step_failed(step, error="down", transient=True, now=now, policy=RetryPolicy(max_attempts=2),
                             jitter=0.5)
            return
        if step is Step.SEND_LINK:
            self.buyer_emails += 1
            self.sent_link = case.payment_url
            case.link_sent(now=now)
        elif step is Step.SEND_VENDOR_REMINDER:
            case.vendor_reminder_sent(now=now)
        elif step is Step.VENDOR_OVERDUE:
            case.vendor_overdue(now=now)
        elif step is Step.SEND_REMINDER:
            case.reminder_sent(now=now)
        elif step is Step.SEND_FINAL_NOTICE:
            case.final_notice_done(now=now)
        elif step is Step.EXPIRE:
            case.expired(now=now)
        elif step is Step.SEND_DEACTIVATE_LINK:
            case.link_to_deactivate_told(now=now)
        else:
            raise AssertionError(f"unexpected step {step}")

    @precondition(lambda self: self.case.state is CaseState.NEEDS_PERSON)
    @rule()
    def person_retries(self) -> None:
        with contextlib.suppress(CaseError):
            self.case.retry(now=self._tick())

    @invariant()
    def the_buyers_email_is_due_only_with_both_known(self) -> None:
        if self.case.next_step is Step.SEND_LINK:
            assert self.case.payment_url is not None and self.case.original_known_cancelled

    @invariant()
    def one_buyer_email_with_one_link(self) -> None:
        assert self.buyer_emails <= 1
        if self.sent_link is not None:
            assert self.case.payment_url == self.sent_link

    @invariant()
    def the_buyer_is_never_asked_after_paying_or_the_original_paid(self) -> None:
        if self.case.link_sent_at is None and self.case.recovered_minor:
            assert self.case.next_step is not Step.SEND_LINK


TestVendorCaseInAnyOrder = VendorCase.TestCase
TestVendorCaseInAnyOrder.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                                             suppress_health_check=[HealthCheck.too_slow])
