"""The dunning case: every step it allows, every step it refuses, and what it records."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.case import (
    AGREEMENT_WAIT,
    PAID_AFTER_CANCEL,
    WITHDRAW_ORIGINAL_PAID,
    Buyer,
    CaseError,
    CaseState,
    DunningCase,
    RetryPolicy,
    Step,
)
from domain.money import MAX_MINOR, Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from domain.policy import ReplacementKind

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "copecart"
T0 = datetime(2026, 10, 1, 8, 0, 5, tzinfo=UTC)
TODAY = date(2026, 10, 1)
BUYER = Buyer(email="anna@example.com", first_name="Anna", last_name="Meier", country_code="DE", id="b-7")
POLICY = RetryPolicy(base=timedelta(seconds=2), cap=timedelta(minutes=5), max_attempts=4)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def original(**statuses: InstallmentStatus) -> InstallmentPlan:
    """Installment 3 of 6 failed, 50.00 EUR each; ``statuses`` overrides by number (``n3=...``)."""
    fields = json.loads((FIXTURES / "payment_failed_breakdown.json").read_text())
    plan = InstallmentPlan.from_ipn(fields)
    for key, status in statuses.items():
        plan = plan.with_status(int(key.removeprefix("n")), status)
    return plan


def opened(kind: ReplacementKind = ReplacementKind.REMAINING_INSTALLMENTS, case_id: str = "case-1") -> DunningCase:
    return DunningCase.open(case_id=case_id, vendor="acme", original_order_id="CC-1001", failed_installment=3,
                            replacement_kind=kind, now=T0)


def planned(kind: ReplacementKind = ReplacementKind.REMAINING_INSTALLMENTS,
            plan: InstallmentPlan | None = None) -> DunningCase:
    case = opened(kind)
    case.plan(plan or original(), order_vendor="acme", order_status="active", buyer=BUYER, product_id="p-42",
              product_name="Coaching Program", today=TODAY, now=at(1))
    return case


def replacement_created() -> DunningCase:
    case = planned()
    case.replacement_created(order_id="CC-1001-R", payment_url="http://127.0.0.1:8090/pay/CC-1001-R", now=at(2))
    return case


def original_cancelled() -> DunningCase:
    case = replacement_created()
    case.original_cancelled(now=at(3))
    return case


def awaiting_payment() -> DunningCase:
    case = original_cancelled()
    case.link_sent(now=at(4))
    return case


def recovered() -> DunningCase:
    case = awaiting_payment()
    case.replacement_paid(amount=Money(5000, "EUR"), now=at(5))
    return case


def kinds(case: DunningCase) -> list[str]:
    return [e.kind for e in case.events]


# -- the happy path --------------------------------------------------------------------------------------


def test_happy_path_from_failure_to_recovery() -> None:
    case = opened()
    assert case.state is CaseState.OPEN
    assert case.next_step is Step.FETCH_ORIGINAL
    assert case.is_due(T0)
    assert case.outstanding is None

    case.plan(original(), order_vendor="acme",
              order_status="active", buyer=BUYER, product_id="p-42", product_name="Coaching Program",
              today=TODAY, now=at(1))
    assert case.state is CaseState.PLANNED
    assert case.next_step is Step.CREATE_REPLACEMENT
    assert case.outstanding == Money(20000, "EUR")
    assert case.replacement is not None
    assert [(i.amount.minor, i.due_date) for i in case.replacement.installments] == [
        (5000, date(2026, 10, 1)), (5000, date(2026, 11, 1)), (5000, date(2026, 12, 1)), (5000, date(2027, 1, 1))]
    assert (case.buyer, case.product_id, case.product_name) == (BUYER, "p-42", "Coaching Program")

    case.replacement_created(order_id="CC-1001-R", payment_url="http://127.0.0.1:8090/pay/CC-1001-R", now=at(2))
    assert case.state is CaseState.REPLACEMENT_CREATED
    assert case.next_step is Step.CANCEL_ORIGINAL
    assert (case.replacement_order_id, case.payment_url) == ("CC-1001-R", "http://127.0.0.1:8090/pay/CC-1001-R")

    case.original_cancelled(now=at(3))
    assert case.state is CaseState.ORIGINAL_CANCELLED
    assert case.next_step is Step.SEND_LINK
    assert Step.SEND_LINK.is_email and not Step.CANCEL_ORIGINAL.is_email

    case.link_sent(now=at(4))
    assert case.state is CaseState.AWAITING_PAYMENT
    assert case.link_sent_at == at(4)
    assert case.next_step is None
    assert not case.is_due(at(10**6)), "waiting for the buyer is not work for dunlink"
    assert not case.is_closed

    case.replacement_paid(amount=Money(5000, "EUR"), now=at(5))
    assert case.state is CaseState.RECOVERED
    assert case.recovered_minor == 5000
    assert case.is_closed
    assert case.closed_at == at(5)
    assert case.next_step is None
    assert kinds(case) == ["opened", "planned", "replacement_created", "original_cancelled", "link_sent",
                           "recovered"]
    assert [e.at for e in case.events] == [T0, at(1), at(2), at(3), at(4), at(5)]
    assert case.events[-1].detail == {"amount": 5000}
    assert case.updated_at == at(5)


def test_later_replacement_installments_add_to_what_was_recovered() -> None:
    case = recovered()
    case.replacement_paid(amount=Money(5000, "EUR"), now=at(6))
    assert case.state is CaseState.RECOVERED
    assert case.recovered_minor == 10000
    assert kinds(case)[-1] == "replacement_paid"


def test_single_payment_case_asks_for_everything_today() -> None:
    case = planned(ReplacementKind.SINGLE_PAYMENT)
    assert case.replacement is not None
    assert [(i.amount, i.due_date) for i in case.replacement.installments] == [(Money(20000, "EUR"), TODAY)]
    assert case.events[0].detail == {"installment": 3, "replacement_kind": "single_payment"}


def test_refunded_installment_is_asked_for_again() -> None:
    case = planned(plan=original(n1=InstallmentStatus.REFUNDED))
    assert case.outstanding == Money(25000, "EUR")
    assert case.replacement is not None
    assert [i.amount.minor for i in case.replacement.installments] == [10000, 5000, 5000, 5000]


def test_platform_copy_still_showing_the_installment_open_is_taken_as_failed() -> None:
    case = planned(plan=original(n3=InstallmentStatus.OPEN))
    assert case.state is CaseState.PLANNED
    assert case.outstanding == Money(20000, "EUR")


def test_a_case_starts_at_an_installment() -> None:
    with pytest.raises(CaseError):
        DunningCase.open(case_id="c", vendor="acme", original_order_id="CC-1", failed_installment=0,
                         replacement_kind=ReplacementKind.SINGLE_PAYMENT, now=T0)


# -- illegal steps ---------------------------------------------------------------------------------------

Action = Callable[[DunningCase], None]
ACTIONS: dict[str, Action] = {
    "plan": lambda c: c.plan(original(), order_vendor="acme", order_status="active", buyer=BUYER, product_id="p-42",
                             product_name="Coaching Program", today=TODAY, now=at(50)),
    "replacement_created": lambda c: c.replacement_created(order_id="X", payment_url="http://x", now=at(50)),
    "original_cancelled": lambda c: c.original_cancelled(now=at(50)),
    "link_sent": lambda c: c.link_sent(now=at(50)),
    "replacement_cancelled": lambda c: c.replacement_cancelled(now=at(50)),
    "retry": lambda c: c.retry(now=at(50)),
}
ALLOWED = {
    CaseState.OPEN: "plan",
    CaseState.PLANNED: "replacement_created",
    CaseState.REPLACEMENT_CREATED: "original_cancelled",
    CaseState.ORIGINAL_CANCELLED: "link_sent",
}
BUILDERS: dict[CaseState, Callable[[], DunningCase]] = {
    CaseState.OPEN: opened,
    CaseState.PLANNED: planned,
    CaseState.REPLACEMENT_CREATED: replacement_created,
    CaseState.ORIGINAL_CANCELLED: original_cancelled,
    CaseState.AWAITING_PAYMENT: awaiting_payment,
    CaseState.RECOVERED: recovered,
}


@pytest.mark.parametrize(
    ("state", "action"),
    [(state, action) for state in BUILDERS for action in ACTIONS if ALLOWED.get(state) != action],
)
def test_a_step_the_state_does_not_allow_raises_and_changes_nothing(state: CaseState, action: str) -> None:
    case = BUILDERS[state]()
    before = case.snapshot()
    with pytest.raises(CaseError):
        ACTIONS[action](case)
    assert case == before


@pytest.mark.parametrize("state", list(BUILDERS))
def test_a_failure_of_another_step_than_the_current_one_raises(state: CaseState) -> None:
    case = BUILDERS[state]()
    for step in Step:
        if step is not case.next_step:
            with pytest.raises(CaseError):
                case.step_failed(step, error="boom", transient=True, now=at(50), policy=POLICY, jitter=0.0)
    assert case.attempts == 0


@pytest.mark.parametrize(("amount", "reason"), [
    (Money(5000, "USD"), "a payment in USD on the replacement of a case in EUR: reconcile"),
    (Money(-15000, "EUR"), "a payment of -150.00 EUR on the replacement: payments must be positive; check it on "
                           "the platform"),
    (Money(0, "EUR"), "a payment of 0.00 EUR on the replacement: payments must be positive; check it on the "
                      "platform"),
])
def test_a_payment_that_cannot_be_counted_goes_to_a_person_and_recovers_nothing(amount: Money, reason: str) -> None:
    for case in (awaiting_payment(), recovered()):
        recovered_before = case.recovered_minor
        case.replacement_paid(amount=amount, now=at(50))
        assert (case.state, case.reason, case.failed_step) == (CaseState.NEEDS_PERSON, reason, None)
        assert case.recovered_minor == recovered_before
        with pytest.raises(CaseError, match="no failed step"):
            case.retry(now=at(51))
        _adds_up(case)


def test_payments_that_would_add_up_beyond_what_can_be_stored_go_to_a_person() -> None:
    case = awaiting_payment()
    case.replacement_paid(amount=Money(MAX_MINOR, "EUR"), now=at(50))
    assert case.state is CaseState.RECOVERED
    case.replacement_paid(amount=Money(1, "EUR"), now=at(51))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason == "payments on the replacement add up to more than can be stored: reconcile"
    assert case.recovered_minor == MAX_MINOR


@pytest.mark.parametrize("minor", [0, -5000])
def test_a_payment_on_the_original_that_is_not_positive_goes_to_a_person(minor: int) -> None:
    case = opened()
    case.original_paid(installment=3, amount=Money(minor, "EUR"), now=at(20))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason == (f"a payment of {Money(minor, 'EUR')} on the original: payments must be positive; "
                           "check it on the platform")


def test_an_event_that_cannot_be_applied_hands_the_case_to_a_person_with_the_error() -> None:
    case = awaiting_payment()
    case.event_failed(event_type="payment.made", error="CaseError: something odd", now=at(50))
    assert (case.state, case.failed_step, case.next_attempt_at) == (CaseState.NEEDS_PERSON, None, None)
    assert case.reason == "a payment.made event could not be applied: CaseError: something odd"
    assert case.events[-1].detail == {"reason": case.reason, "step": None, "code": "event_failed"}


# -- races with the original payment ---------------------------------------------------------------------


def test_original_paid_before_the_replacement_exists_resolves_with_nothing_left_to_do() -> None:
    case = opened()
    case.original_paid(installment=3, now=at(20))
    assert case.state is CaseState.RESOLVED
    assert case.is_closed
    assert case.next_step is None
    assert not case.is_due(at(10**6))
    assert case.replacement_order_id is None
    assert case.reason is None
    assert case.events[-1].kind == "original_paid"


def test_original_paid_once_planned_withdraws_a_replacement_that_may_exist() -> None:
    """A create whose answer was lost may have made the replacement: the withdrawal step finds and cancels it."""
    case = planned()
    case.original_paid(installment=3, now=at(20))
    assert case.state is CaseState.CANCELLING_REPLACEMENT
    assert case.next_step is Step.CANCEL_REPLACEMENT
    assert case.reason == WITHDRAW_ORIGINAL_PAID
    case.replacement_cancelled(now=at(21), order_id="R-9")
    assert case.state is CaseState.RESOLVED
    assert case.replacement_order_id == "R-9"


def test_withdrawing_finds_the_original_cancelled_and_hands_the_case_to_a_person() -> None:
    case = replacement_created()
    case.original_paid(installment=3, now=at(20))
    case.original_found_cancelled(now=at(21))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason == PAID_AFTER_CANCEL
    assert case.failed_step is None


def test_original_paid_after_the_replacement_was_created_cancels_the_replacement() -> None:
    case = replacement_created()
    case.original_paid(installment=3, now=at(20))
    assert case.state is CaseState.CANCELLING_REPLACEMENT
    assert case.next_step is Step.CANCEL_REPLACEMENT
    assert case.is_due(at(20))
    case.replacement_cancelled(now=at(21))
    assert case.state is CaseState.RESOLVED
    assert case.is_closed
    assert case.next_step is None
    assert case.events[-1].detail == {"order": "CC-1001-R"}


@pytest.mark.parametrize("build", [original_cancelled, awaiting_payment])
def test_original_paid_after_it_was_cancelled_goes_to_a_person(build: Callable[[], DunningCase]) -> None:
    case = build()
    case.original_paid(installment=3, now=at(20))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason == "paid on a cancelled order: refund or reconcile" == PAID_AFTER_CANCEL
    assert case.next_step is None
    assert not case.is_due(at(10**6))
    with pytest.raises(CaseError, match="no failed step"):
        case.retry(now=at(21))


def test_payment_of_another_installment_is_only_recorded() -> None:
    case = replacement_created()
    case.original_paid(installment=2, now=at(20))
    assert case.state is CaseState.REPLACEMENT_CREATED
    assert case.events[-1].kind == "payment_ignored"
    assert case.events[-1].detail == {"order": "CC-1001", "installment": 2}


def test_original_paid_after_the_case_closed_is_only_recorded() -> None:
    case = recovered()
    case.original_paid(installment=3, now=at(20))
    assert case.state is CaseState.RECOVERED
    assert case.events[-1].kind == "payment_ignored"


def test_paying_both_the_original_and_the_replacement_goes_to_a_person() -> None:
    case = replacement_created()
    case.original_paid(installment=3, now=at(20))
    case.replacement_paid(amount=Money(5000, "EUR"), now=at(21))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason is not None and "refund" in case.reason
    assert case.next_step is None
    assert kinds(case)[-2:] == ["replacement_paid", "needs_person"]


def test_paying_the_replacement_while_a_person_has_its_failed_cancel_stays_with_them() -> None:
    case = replacement_created()
    case.original_paid(installment=3, now=at(20))
    case.step_failed(Step.CANCEL_REPLACEMENT, error="409 order completed", transient=False, now=at(21),
                     policy=POLICY, jitter=0.0)
    case.replacement_paid(amount=Money(5000, "EUR"), now=at(22))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason is not None and "refund" in case.reason
    assert not case.is_closed


def test_a_replacement_payment_while_a_person_reconciles_keeps_the_case_with_them() -> None:
    case = awaiting_payment()
    case.original_paid(installment=3, now=at(20))
    case.replacement_paid(amount=Money(5000, "EUR"), now=at(21))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason == PAID_AFTER_CANCEL
    assert not case.is_closed
    assert case.events[-1].kind == "replacement_paid"
    assert case.events[-1].detail == {"amount": 5000}


def test_replacement_paid_after_the_case_was_resolved_goes_to_a_person() -> None:
    case = replacement_created()
    case.original_paid(installment=3, now=at(20))
    case.replacement_cancelled(now=at(21))
    case.replacement_paid(amount=Money(5000, "EUR"), now=at(22))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason is not None and "reconcile" in case.reason


# -- failures, retries and people ------------------------------------------------------------------------


def test_transient_failures_back_off_then_hand_over_naming_the_step() -> None:
    case = planned()
    jitters = [0.0, 0.5, 0.99]
    expected = [timedelta(seconds=1), timedelta(seconds=3), timedelta(seconds=7.96)]
    now = at(10)
    for attempt, (jitter, delay) in enumerate(zip(jitters, expected, strict=True), start=1):
        case.step_failed(Step.CREATE_REPLACEMENT, error="503 from platform", transient=True, now=now,
                         policy=POLICY, jitter=jitter)
        assert case.state is CaseState.PLANNED
        assert case.attempts == attempt
        assert case.next_attempt_at == now + delay
        assert not case.is_due(now + delay - timedelta(microseconds=1))
        assert case.is_due(now + delay)
        now = now + delay
    case.step_failed(Step.CREATE_REPLACEMENT, error="503 from platform", transient=True, now=now, policy=POLICY,
                     jitter=0.3)
    assert case.state is CaseState.NEEDS_PERSON
    assert case.failed_step is Step.CREATE_REPLACEMENT
    assert case.reason == "create_replacement still failing after 4 attempts: 503 from platform"
    assert case.next_step is None
    assert not case.is_due(now + timedelta(days=365))
    assert kinds(case)[-4:] == ["step_retry", "step_retry", "step_retry", "needs_person"]
    assert case.events[-1].detail == {"reason": case.reason, "step": "create_replacement",
                                      "code": "platform_unavailable", "attempts": 4}


def test_a_permanent_failure_hands_over_at_once() -> None:
    case = replacement_created()
    case.step_failed(Step.CANCEL_ORIGINAL, error="409 order completed", transient=False, now=at(10),
                     policy=POLICY, jitter=0.0)
    assert case.state is CaseState.NEEDS_PERSON
    assert case.failed_step is Step.CANCEL_ORIGINAL
    assert case.reason == "cancel_original failed: 409 order completed"
    assert case.attempts == 1


@pytest.mark.parametrize(
    ("build", "step", "state"),
    [
        (opened, Step.FETCH_ORIGINAL, CaseState.OPEN),
        (planned, Step.CREATE_REPLACEMENT, CaseState.PLANNED),
        (replacement_created, Step.CANCEL_ORIGINAL, CaseState.REPLACEMENT_CREATED),
        (original_cancelled, Step.SEND_LINK, CaseState.ORIGINAL_CANCELLED),
    ],
)
def test_retry_returns_to_the_failed_step(build: Callable[[], DunningCase], step: Step, state: CaseState) -> None:
    case = build()
    key = case.idempotency_key(step)
    case.step_failed(step, error="bad gateway", transient=False, now=at(10), policy=POLICY, jitter=0.0)
    assert case.state is CaseState.NEEDS_PERSON
    case.retry(now=at(600))
    assert case.state is state
    assert case.next_step is step
    assert case.attempts == 0
    assert case.reason is None and case.failed_step is None
    assert case.is_due(at(600))
    assert case.idempotency_key(step) == key, "a retried effect reuses its key"
    assert case.events[-1].kind == "retry_requested"


def test_retry_after_exhausted_attempts_starts_counting_again() -> None:
    case = planned()
    for _ in range(POLICY.max_attempts):
        case.step_failed(Step.CREATE_REPLACEMENT, error="timeout", transient=True, now=at(10), policy=POLICY,
                         jitter=0.0)
    assert case.state is CaseState.NEEDS_PERSON
    case.retry(now=at(20))
    case.step_failed(Step.CREATE_REPLACEMENT, error="timeout", transient=True, now=at(30), policy=POLICY,
                     jitter=0.0)
    assert case.state is CaseState.PLANNED
    assert case.attempts == 1


def test_original_paid_while_a_person_has_a_failed_cancel_cancels_the_replacement() -> None:
    case = replacement_created()
    case.step_failed(Step.CANCEL_ORIGINAL, error="409", transient=False, now=at(10), policy=POLICY, jitter=0.0)
    case.original_paid(installment=3, now=at(20))
    assert case.state is CaseState.CANCELLING_REPLACEMENT
    assert case.next_step is Step.CANCEL_REPLACEMENT
    assert case.reason == WITHDRAW_ORIGINAL_PAID
    assert case.failed_step is None


def test_original_paid_while_a_person_has_a_failed_create_withdraws_what_may_exist() -> None:
    case = planned()
    case.step_failed(Step.CREATE_REPLACEMENT, error="503", transient=True, now=at(10),
                     policy=RetryPolicy(max_attempts=1), jitter=0.0)
    assert case.state is CaseState.NEEDS_PERSON  # the retries ran out: a person has it
    case.original_paid(installment=3, now=at(20))
    assert case.state is CaseState.CANCELLING_REPLACEMENT
    assert case.next_step is Step.CANCEL_REPLACEMENT
    assert case.reason == WITHDRAW_ORIGINAL_PAID


def test_retry_is_only_for_a_case_with_a_person() -> None:
    case = planned()
    with pytest.raises(CaseError):
        case.retry(now=at(10))


@pytest.mark.parametrize("note", ["", "   ", "\n"])
def test_resolving_by_hand_needs_a_note(note: str) -> None:
    case = awaiting_payment()
    with pytest.raises(CaseError, match="note"):
        case.resolve(note=note, now=at(10))
    assert case.state is CaseState.AWAITING_PAYMENT


def test_resolving_by_hand() -> None:
    case = replacement_created()
    case.step_failed(Step.CANCEL_ORIGINAL, error="409", transient=False, now=at(10), policy=POLICY, jitter=0.0)
    case.resolve(note="cancelled the original in the vendor dashboard", now=at(20))
    assert case.state is CaseState.RESOLVED
    assert case.closed_at == at(20)
    assert case.reason is None
    assert case.events[-1].kind == "resolved_by_hand"
    assert case.events[-1].detail == {"note": "cancelled the original in the vendor dashboard"}
    with pytest.raises(CaseError, match="already resolved"):
        case.resolve(note="again", now=at(30))


# -- retry policy ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 2), (1, 2), (2, 4), (3, 8), (8, 256), (9, 300), (40, 300), (10**6, 300)],
)
def test_backoff_doubles_up_to_the_cap_and_jitter_stays_within_it(attempt: int, ceiling: int) -> None:
    policy = RetryPolicy()
    assert policy.delay(attempt, 0.0) == timedelta(seconds=ceiling / 2)
    assert timedelta(seconds=ceiling / 2) < policy.delay(attempt, 0.5) < timedelta(seconds=ceiling)
    assert policy.delay(attempt, 0.999999) < timedelta(seconds=ceiling)


# -- idempotency keys ------------------------------------------------------------------------------------


def test_idempotency_keys_are_stable_per_case_and_step() -> None:
    case, same_case = opened(case_id="case-1"), opened(case_id="case-1")
    other = opened(case_id="case-2")
    keys = {step: case.idempotency_key(step) for step in Step}
    assert len(set(keys.values())) == len(Step)
    assert keys == {step: same_case.idempotency_key(step) for step in Step}
    assert not set(keys.values()) & {other.idempotency_key(step) for step in Step}
    ACTIONS["plan"](case)
    assert keys == {step: case.idempotency_key(step) for step in Step}, "a key does not change with the state"


# -- plan() and the platform's view ----------------------------------------------------------------------


def _plan(case: DunningCase, plan: InstallmentPlan, now: datetime, *, vendor: str = "acme",
          today: date = TODAY, undeliverable: str | None = None) -> None:
    case.plan(plan, order_vendor=vendor, order_status="active", buyer=BUYER, product_id="p-42",
              product_name="Coaching Program", today=today, now=now, undeliverable=undeliverable)


def test_plan_when_the_platform_shows_the_installment_paid_resolves_with_nothing_done() -> None:
    case = opened()
    _plan(case, original(n3=InstallmentStatus.PAID), at(1))
    assert case.state is CaseState.RESOLVED
    assert (case.replacement, case.next_step, case.events[-1].kind) == (None, None, "original_paid")


@pytest.mark.parametrize(("statuses", "shown"), [
    ({"n3": InstallmentStatus.OPEN}, "open and due on 2026-10-01"),  # seen the day before it is due
    ({"n3": InstallmentStatus.VOID}, "void"),
    ({"n3": InstallmentStatus.REFUNDED}, "refunded"),
])
def test_until_the_platform_agrees_the_installment_is_unpaid_nothing_is_done(
        statuses: dict[str, InstallmentStatus], shown: str) -> None:
    case = opened()
    looked_at: list[datetime] = []
    now = at(1)
    while case.state is CaseState.OPEN:
        _plan(case, original(**statuses), now, today=TODAY - timedelta(days=1))
        looked_at.append(now)
        assert case.replacement is None and case.buyer is None
        if case.next_attempt_at is not None:
            assert case.next_step is Step.FETCH_ORIGINAL
            assert not case.is_due(now)
            now = case.next_attempt_at
    gaps = [round((b - a).total_seconds()) for a, b in itertools.pairwise(looked_at)]
    assert gaps == [30, 31, 62, 124, 248, 496, 900, 900, 808], "each wait as long as the time waited, 15 min at most"
    assert looked_at[-1] == T0 + AGREEMENT_WAIT
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason == (f"the platform shows installment 3 as {shown}, not failed, an hour after the "
                           "payment.failed IPN: nothing was done; check the order")
    assert case.failed_step is Step.FETCH_ORIGINAL
    assert [e.kind for e in case.events].count("installment_not_failed") == len(looked_at) - 1
    _adds_up(case)


def test_the_platform_agreeing_within_the_hour_lets_the_case_go_on() -> None:
    case = opened()
    _plan(case, original(n3=InstallmentStatus.OPEN), at(1), today=TODAY - timedelta(days=1))
    assert case.state is CaseState.OPEN
    _plan(case, original(n3=InstallmentStatus.OPEN), at(40), today=TODAY)  # the installment is due today
    assert case.state is CaseState.PLANNED
    assert case.outstanding == Money(20000, "EUR")


def test_a_payment_on_the_original_while_waiting_for_the_platform_closes_the_case() -> None:
    case = opened()
    _plan(case, original(n3=InstallmentStatus.OPEN), at(1), today=TODAY - timedelta(days=1))
    assert case.state is CaseState.OPEN
    case.original_paid(installment=3, amount=Money(5000, "EUR"), now=at(5))
    assert case.state is CaseState.RESOLVED


def test_another_vendors_order_is_never_planned() -> None:
    case = opened()
    _plan(case, original(), at(1), vendor="globex")
    assert (case.state, case.failed_step, case.replacement) == (CaseState.NEEDS_PERSON, Step.FETCH_ORIGINAL, None)
    assert case.reason == ("the original order belongs to vendor 'globex', not 'acme' whose secret signed the IPN: "
                           "nothing was done; check who sent it")
    assert case.buyer is None


def test_an_installment_beyond_the_plan_goes_to_a_person_before_anything_is_done() -> None:
    case = DunningCase.open(case_id="c", vendor="acme", original_order_id="CC-1001", failed_installment=9,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=T0)
    _plan(case, original(), at(1))
    assert (case.state, case.failed_step, case.replacement) == (CaseState.NEEDS_PERSON, Step.FETCH_ORIGINAL, None)
    assert case.reason == "the IPN names installment 9, but the original order has 6: nothing was done; check the order"


def test_a_link_that_could_not_be_emailed_stops_the_case_before_the_platform_is_touched() -> None:
    case = opened()
    _plan(case, original(), at(1), undeliverable="InvalidAddressError: address must look like local@domain")
    assert (case.state, case.failed_step, case.replacement) == (CaseState.NEEDS_PERSON, Step.FETCH_ORIGINAL, None)
    assert case.reason == ("the payment link could not be emailed: InvalidAddressError: address must look like "
                           "local@domain; nothing was done: correct it on the platform, then retry")
    case.retry(now=at(2))
    _plan(case, original(), at(3))
    assert case.state is CaseState.PLANNED


def test_amounts_that_add_up_beyond_what_can_be_stored_go_to_a_person_before_anything_is_done() -> None:
    huge = Money(MAX_MINOR // 2 + 1, "EUR")
    plan = InstallmentPlan("EUR", Frequency.MONTHLY, tuple(
        Installment(n, huge, date(2026, 7 + n, 1), InstallmentStatus.PAID if n < 3 else InstallmentStatus.OPEN)
        for n in range(1, 5)))
    case = opened()
    _plan(case, plan, at(1))
    assert (case.state, case.failed_step, case.replacement) == (CaseState.NEEDS_PERSON, Step.FETCH_ORIGINAL, None)
    assert case.reason is not None
    assert case.reason.startswith("no replacement can be planned from the original order: too large to store")


@pytest.mark.parametrize("status", ["cancelled", "completed"])
def test_plan_when_the_order_is_not_active_goes_to_a_person(status: str) -> None:
    case = opened()
    case.plan(original(), order_vendor="acme",
              order_status=status, buyer=BUYER, product_id="p-42", product_name="Coaching Program",
              today=TODAY, now=at(1))
    assert case.state is CaseState.NEEDS_PERSON
    assert case.reason is not None and status in case.reason
    assert case.failed_step is Step.FETCH_ORIGINAL
    assert case.replacement is None
    case.retry(now=at(2))
    assert case.state is CaseState.OPEN
    assert case.next_step is Step.FETCH_ORIGINAL


def test_timeline_records_events_in_order_through_a_retry_and_a_race() -> None:
    case = planned()
    case.step_failed(Step.CREATE_REPLACEMENT, error="timeout", transient=True, now=at(2), policy=POLICY, jitter=0.0)
    case.replacement_created(order_id="CC-1001-R", payment_url="http://x/pay", now=at(3))
    case.original_paid(installment=3, now=at(4))
    case.replacement_cancelled(now=at(5))
    assert [(e.kind, e.at) for e in case.events] == [
        ("opened", T0), ("planned", at(1)), ("step_retry", at(2)), ("replacement_created", at(3)),
        ("original_paid", at(4)), ("replacement_withdrawn", at(5)),
    ]
    assert case.events[1].detail == {"outstanding": 20000, "installments": 4}
    assert case.events[2].detail["attempt"] == 1
    assert case.events[2].detail["next_attempt_at"] == at(3).isoformat()


def test_snapshot_is_independent_of_later_events() -> None:
    case = planned()
    snap = case.snapshot()
    case.replacement_created(order_id="CC-1001-R", payment_url="http://x/pay", now=at(3))
    assert snap.state is CaseState.PLANNED
    assert len(snap.events) == 2


# -- what each event says it changed -----------------------------------------------------------------------
# /metrics adds these up instead of counting every case again: over a timeline they must give the case as it is.


def _adds_up(case: DunningCase) -> None:
    state: CaseState | None = None
    recovered = 0
    for event in case.events:
        assert event.state_before == state, event
        state = event.state
        recovered += event.recovered_minor_added
    assert (state, recovered) == (case.state, case.recovered_minor)


def test_each_event_says_the_state_before_and_after_and_what_it_added_to_the_amount_recovered() -> None:
    case = recovered()
    assert [(e.kind, e.state_before, e.state, e.recovered_minor_added) for e in case.events] == [
        ("opened", None, CaseState.OPEN, 0),
        ("planned", CaseState.OPEN, CaseState.PLANNED, 0),
        ("replacement_created", CaseState.PLANNED, CaseState.REPLACEMENT_CREATED, 0),
        ("original_cancelled", CaseState.REPLACEMENT_CREATED, CaseState.ORIGINAL_CANCELLED, 0),
        ("link_sent", CaseState.ORIGINAL_CANCELLED, CaseState.AWAITING_PAYMENT, 0),
        ("recovered", CaseState.AWAITING_PAYMENT, CaseState.RECOVERED, 5000),
    ]
    case.replacement_paid(amount=Money(5000, "EUR"), now=at(6))
    assert (case.events[-1].state_before, case.events[-1].state, case.events[-1].recovered_minor_added) == (
        CaseState.RECOVERED, CaseState.RECOVERED, 5000)


def test_a_stored_case_goes_on_from_where_its_timeline_left_it() -> None:
    case = awaiting_payment()
    stored = DunningCase(**{name: getattr(case, name) for name in DunningCase.__dataclass_fields__
                            if DunningCase.__dataclass_fields__[name].init and name != "events"})
    stored.replacement_paid(amount=Money(5000, "EUR"), now=at(5))
    [event] = stored.events
    assert (event.state_before, event.state, event.recovered_minor_added) == (
        CaseState.AWAITING_PAYMENT, CaseState.RECOVERED, 5000)


def test_paid_before_the_original_was_cancelled_counts_the_payment_once() -> None:
    case = replacement_created()
    case.replacement_paid(amount=Money(5000, "EUR"), now=at(3))
    case.original_cancelled(now=at(4))
    assert case.state is CaseState.RECOVERED
    assert [e.recovered_minor_added for e in case.events[-3:]] == [5000, 0, 0]
    _adds_up(case)


def test_a_lost_case_paid_late_leaves_lost_for_a_person() -> None:
    case = DunningCase.open(case_id="c", vendor="acme", original_order_id="CC-1", failed_installment=3,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=T0, expire_after_days=1)
    case.plan(original(), order_vendor="acme",
              order_status="active", buyer=BUYER, product_id="p", product_name="P", today=TODAY,
              now=at(1))
    case.replacement_created(order_id="R", payment_url="http://x/pay/R", now=at(2))
    case.original_cancelled(now=at(3))
    case.link_sent(now=at(4))
    case.expired(now=at(5))
    case.replacement_paid(amount=Money(5000, "EUR"), now=at(6))
    assert (case.events[-1].state_before, case.events[-1].state) == (CaseState.LOST, CaseState.NEEDS_PERSON)
    assert case.recovered_minor == 0
    _adds_up(case)


_WALK: list[Callable[[DunningCase, datetime], None]] = [
    lambda c, now: c.plan(original(), order_vendor="acme",
                          order_status="active", buyer=BUYER, product_id="p", product_name="P",
                          today=TODAY, now=now),
    lambda c, now: c.plan(original(n3=InstallmentStatus.PAID), order_vendor="acme",
                          order_status="active", buyer=BUYER, product_id="p",
                          product_name="P", today=TODAY, now=now),
    lambda c, now: c.replacement_created(order_id="R", payment_url="http://x/pay/R", now=now),
    lambda c, now: c.original_cancelled(now=now),
    lambda c, now: c.link_sent(now=now),
    lambda c, now: c.reminder_sent(now=now),
    lambda c, now: c.final_notice_done(now=now),
    lambda c, now: c.expired(now=now),
    lambda c, now: c.plan(original(), order_vendor="globex", order_status="active", buyer=BUYER, product_id="p",
                          product_name="P", today=TODAY, now=now),
    lambda c, now: c.plan(original(n3=InstallmentStatus.OPEN), order_vendor="acme", order_status="active",
                          buyer=BUYER, product_id="p", product_name="P", today=TODAY - timedelta(days=1), now=now),
    lambda c, now: c.replacement_paid(amount=Money(5000, "EUR"), now=now),
    lambda c, now: c.replacement_paid(amount=Money(-5000, "EUR"), now=now),
    lambda c, now: c.original_paid(installment=3, now=now),
    lambda c, now: c.event_failed(event_type="payment.made", error="MoneyError: x", now=now),
    lambda c, now: c.installment_refunded(installment=1, status=InstallmentStatus.REFUNDED, now=now),
    lambda c, now: c.plan_cancelled(now=now),
    lambda c, now: c.replacement_cancelled(now=now),
    lambda c, now: c.original_found_cancelled(now=now),
    lambda c, now: c.step_failed(c.next_step or Step.FETCH_ORIGINAL, error="503", transient=True, now=now,
                                 policy=POLICY, jitter=0.5),
    lambda c, now: c.step_failed(c.next_step or Step.FETCH_ORIGINAL, error="422", transient=False, now=now,
                                 policy=POLICY, jitter=0.5),
    lambda c, now: c.retry(now=now),
    lambda c, now: c.resolve(note="by hand", now=now),
    lambda c, now: c.note("payment.other", now=now),
]


@given(st.lists(st.integers(min_value=0, max_value=len(_WALK) - 1), max_size=40))
def test_whatever_happens_to_a_case_its_timeline_adds_up_to_it(moves: list[int]) -> None:
    case = DunningCase.open(case_id="c", vendor="acme", original_order_id="CC-1", failed_installment=3,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=T0, reminder_days=(3,),
                            expire_after_days=7)
    for second, move in enumerate(moves, start=1):
        with contextlib.suppress(CaseError):
            _WALK[move](case, at(second))
        _adds_up(case)
