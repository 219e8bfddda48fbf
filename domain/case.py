"""The dunning case: one failed installment followed from the failure to an end.

A case is a state machine. Its methods decide what is allowed and record what happened (``events``); they
never call out. The pipeline asks ``next_step`` what to do, performs that one effect with the step's
idempotency key, and reports the outcome back, so every task may run twice without doing anything twice.

    open ──plan──► planned ──create──► replacement_created ──cancel──► original_cancelled ──email──► awaiting_payment
      │               │                     │                                  │                         │
      │               │                     └─ original paid ─► cancelling_replacement ─► resolved       ├─► recovered
      └───────────────┴── original paid / nothing owed ─► resolved          paid after cancel ─► needs_person
    any open state ── give up ─► needs_person ── retry ─► (the state it left) | resolve by hand ─► resolved

Planning settles whatever would stop the case later (whose order it is, the installment unpaid on the
platform, the amounts, the buyer's address): a case that cannot finish goes to a person from ``open``, before
any effect. While the platform shows the installment neither failed nor paid, ``open`` waits and looks again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from domain.events import CHARGED_BACK, MADE, RECURRING_CANCELLED, REFUNDED, PaymentEvent
from domain.money import MAX_MINOR, Money, MoneyError
from domain.plans import Installment, InstallmentPlan, InstallmentStatus, PlanError, replacement_plan
from domain.policy import ReplacementBy, ReplacementKind


class CaseError(Exception):
    """A step that the case's state does not allow."""


class LinkAlreadySent(CaseError):
    """A different link after the buyer was emailed one, or after the case ended: refused (409 on the page)."""


class CaseState(StrEnum):
    OPEN = "open"
    PLANNED = "planned"
    REPLACEMENT_CREATED = "replacement_created"
    ORIGINAL_CANCELLED = "original_cancelled"
    AWAITING_PAYMENT = "awaiting_payment"
    CANCELLING_REPLACEMENT = "cancelling_replacement"
    # A vendor who makes the replacement by hand (replacement_by = "vendor"): the task email went out and
    # dunlink waits for the link, then for the original to be known cancelled; a link to deactivate is told.
    AWAITING_VENDOR_LINK = "awaiting_vendor_link"
    AWAITING_ORIGINAL_CANCEL = "awaiting_original_cancel"
    DEACTIVATING_LINK = "deactivating_link"
    NEEDS_PERSON = "needs_person"
    RECOVERED = "recovered"
    RESOLVED = "resolved"
    LOST = "lost"


ENDS = frozenset({CaseState.RECOVERED, CaseState.RESOLVED, CaseState.LOST})
# States in which dunlink itself still has work to do (as opposed to waiting for the buyer or a person).
WORKING = frozenset({CaseState.OPEN, CaseState.PLANNED, CaseState.REPLACEMENT_CREATED,
                     CaseState.ORIGINAL_CANCELLED, CaseState.CANCELLING_REPLACEMENT, CaseState.DEACTIVATING_LINK})
# Waiting for the vendor's clicks in CopeCart (replacement_by = "vendor"), reminded daily.
VENDOR_WAITING = frozenset({CaseState.AWAITING_VENDOR_LINK, CaseState.AWAITING_ORIGINAL_CANCEL})
# States with steps that fall due over time: dunlink's own work, and the reminders of a case awaiting payment
# or the vendor.
ACTIVE = WORKING | VENDOR_WAITING | {CaseState.AWAITING_PAYMENT}


class Step(StrEnum):
    """One outbound effect; with the case id it forms the idempotency key of that effect."""

    FETCH_ORIGINAL = "fetch_original"
    CREATE_REPLACEMENT = "create_replacement"
    CANCEL_ORIGINAL = "cancel_original"
    SEND_LINK = "send_link"
    CANCEL_REPLACEMENT = "cancel_replacement"
    SEND_REMINDER = "send_reminder"
    SEND_FINAL_NOTICE = "send_final_notice"
    EXPIRE = "expire"
    # For a vendor who makes the replacement by hand: the plan rebuilt from the IPNs (no call out), the
    # vendor's task email and its daily reminders, the hand-over when the vendor never acts, and the email
    # that tells the vendor to deactivate a link dunlink cannot withdraw.
    PLAN_FROM_IPNS = "plan_from_ipns"
    SEND_VENDOR_TASK = "send_vendor_task"
    SEND_VENDOR_REMINDER = "send_vendor_reminder"
    VENDOR_OVERDUE = "vendor_overdue"
    SEND_DEACTIVATE_LINK = "send_deactivate_link"

    @property
    def is_email(self) -> bool:
        return self in _EMAIL_STEPS

    @property
    def to_vendor(self) -> bool:
        """An email to the vendor (its ``tasks_email``), not to the buyer."""
        return self in (Step.SEND_VENDOR_TASK, Step.SEND_VENDOR_REMINDER, Step.SEND_DEACTIVATE_LINK)


_EMAIL_STEPS = frozenset({Step.SEND_LINK, Step.SEND_REMINDER, Step.SEND_FINAL_NOTICE, Step.SEND_VENDOR_TASK,
                          Step.SEND_VENDOR_REMINDER, Step.SEND_DEACTIVATE_LINK})


_STEP_OF = {
    CaseState.OPEN: Step.FETCH_ORIGINAL,
    CaseState.PLANNED: Step.CREATE_REPLACEMENT,
    CaseState.REPLACEMENT_CREATED: Step.CANCEL_ORIGINAL,
    CaseState.ORIGINAL_CANCELLED: Step.SEND_LINK,
    CaseState.CANCELLING_REPLACEMENT: Step.CANCEL_REPLACEMENT,
    CaseState.DEACTIVATING_LINK: Step.SEND_DEACTIVATE_LINK,
}
# Where a vendor-made replacement takes another step than the order API's.
_VENDOR_STEP_OF = {CaseState.OPEN: Step.PLAN_FROM_IPNS, CaseState.PLANNED: Step.SEND_VENDOR_TASK}

def step_for(state: CaseState) -> Step | None:
    """The step a case in ``state`` performs next, if dunlink has work to do in it."""
    return _STEP_OF.get(state)


PAID_AFTER_CANCEL = "paid on a cancelled order: refund or reconcile"
# Why a replacement is being withdrawn (kept in ``reason`` while the case is cancelling_replacement).
WITHDRAW_ORIGINAL_PAID = "the original was paid"
WITHDRAW_PLAN_CANCELLED = "the plan was cancelled on the platform"
PAID_TWICE = "paid twice, on the original and on the replacement: refund one"

# Why a case waits for a person, as a stable code with parameters (``reason_code``, ``reason_params``) beside
# the free text of ``reason``: the code is what emails word in the reader's language, the text what operators
# read in ``dunlink cases show``. Parameters are plain JSON values; ``amount`` is in minor units of the case's
# currency, as in the timeline. A step that fails for good is ``<step>_failed``; one that kept failing
# transiently is ``platform_unavailable`` or ``mail_server_unavailable``.
REASON_PAID_AFTER_CANCEL = "paid_after_cancel"
REASON_PAID_TWICE = "paid_twice"
REASON_PAID_AFTER_CLOSE = "paid_after_close"
REASON_REFUNDED_AFTER_REPLACEMENT = "refunded_after_replacement"
REASON_CHARGED_BACK_AFTER_REPLACEMENT = "charged_back_after_replacement"
REASON_ORIGINAL_CANCELLED = "original_cancelled"
REASON_ORIGINAL_COMPLETED = "original_completed"
REASON_ORIGINAL_INACTIVE = "original_inactive"
REASON_PLATFORM_UNAVAILABLE = "platform_unavailable"
REASON_MAIL_SERVER_UNAVAILABLE = "mail_server_unavailable"
REASON_INSTALLMENT_NOT_IN_PLAN = "installment_not_in_plan"
REASON_LINK_UNDELIVERABLE = "link_undeliverable"
REASON_NO_REPLACEMENT_PLAN = "no_replacement_plan"
REASON_ORDER_OF_ANOTHER_VENDOR = "order_of_another_vendor"
REASON_PLATFORM_DISAGREES = "platform_disagrees"
REASON_PAYMENT_NOT_COUNTABLE = "payment_not_countable"
REASON_EVENT_FAILED = "event_failed"
REASON_INSTALLMENTS_UNSEEN = "installments_unseen"
REASON_CANNOT_GENERATE_LINK = "cannot_generate_link"
REASON_VENDOR_DID_NOT_ACT = "vendor_did_not_act"
REASON_PAYMENT_AMBIGUOUS = "payment_ambiguous"
REASON_LATER_INSTALLMENT_PAID = "later_installment_paid"
# Why a vendor is told to deactivate the link it made (kept in ``reason`` while deactivating_link).
DEACTIVATE_EXPIRED = "the payment deadline passed"
# Days the vendor is reminded of a task before a person follows it up, when the policy sets no expiry.
VENDOR_DAYS = 14


def step_failed_code(step: Step) -> str:
    """The reason code of ``step`` refused for good (a 4xx, bad data): ``create_replacement_failed``, ..."""
    return f"{step.value}_failed"


# A payment.failed IPN may reach dunlink before the platform's order shows the failure. Until the platform
# agrees (or shows the installment paid, which closes the case), nothing is done; it is asked again after a
# wait that grows with the time already waited, and an hour after the IPN a person looks.
AGREEMENT_WAIT = timedelta(hours=1)
_FIRST_LOOK_AGAIN = timedelta(seconds=30)
_LONGEST_LOOK_AGAIN = timedelta(minutes=15)


def platform_agrees(installment: Installment, today: date) -> bool:
    """The platform shows the installment unpaid: failed, or open and due (``today`` in the vendor's zone)."""
    return installment.status is InstallmentStatus.FAILED or (
        installment.status is InstallmentStatus.OPEN and installment.due_date <= today)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff for transient failures, after which a person takes over."""

    base: timedelta = timedelta(seconds=2)
    cap: timedelta = timedelta(minutes=5)
    max_attempts: int = 8

    def delay(self, attempt: int, jitter: float) -> timedelta:
        """Delay before attempt ``attempt + 1``.

        ``jitter`` in [0, 1) spreads retries over [ceiling/2, ceiling) ("equal jitter"): callers that failed
        together do not retry together, and none retries sooner than half the backoff.
        """
        ceiling = min(self.cap, self.base * (1 << min(max(attempt - 1, 0), 30)))
        return ceiling * (0.5 + jitter / 2)


@dataclass(frozen=True, slots=True)
class Buyer:
    email: str
    first_name: str
    last_name: str
    country_code: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """A line of the case's timeline, recorded by the method that decided it.

    Each line also says what it changed: the case's state before and after it (nothing before the line that
    opened the case) and the minor units it added to the amount recovered. Added up over the timelines, the
    lines give how many cases are in each state and how much was recovered, so figures over every case can be
    kept up to date by reading only the lines written since they were last read.
    """

    at: datetime
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)
    state_before: CaseState | None = None
    state: CaseState | None = None
    recovered_minor_added: int = 0


@dataclass(slots=True)
class DunningCase:
    id: str
    vendor: str
    original_order_id: str
    failed_installment: int
    replacement_kind: ReplacementKind
    state: CaseState
    opened_at: datetime
    updated_at: datetime
    currency: str | None = None
    outstanding_minor: int | None = None
    replacement: InstallmentPlan | None = None
    product_id: str | None = None
    product_name: str | None = None
    buyer: Buyer | None = None
    replacement_order_id: str | None = None
    payment_url: str | None = None
    link_sent_at: datetime | None = None
    recovered_minor: int = 0
    reason: str | None = None
    reason_code: str | None = None
    reason_params: dict[str, Any] = field(default_factory=dict)
    failed_step: Step | None = None
    resume_state: CaseState | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    closed_at: datetime | None = None
    reminder_days: tuple[int, ...] = ()
    expire_after_days: int | None = None
    reminders_sent: int = 0
    final_notice_sent: bool = False
    # Installments refunded or charged back after the failure, applied when the replacement is planned.
    adjustments: dict[int, InstallmentStatus] = field(default_factory=dict)
    # A replacement the vendor makes by hand: when the task email went out, how many daily reminders
    # followed, whether the original is known cancelled (the vendor's word or CopeCart's IPN), whether the
    # vendor said the phone offer cannot make the link, and earlier installments a person found paid.
    replacement_by: ReplacementBy = ReplacementBy.API
    vendor_task_sent_at: datetime | None = None
    vendor_reminders_sent: int = 0
    original_known_cancelled: bool = False
    cannot_generate: bool = False
    confirmed_paid: tuple[int, ...] = ()
    events: list[CaseEvent] = field(default_factory=list)
    # The state and the amount recovered as the timeline last recorded them (as loaded, for a stored case):
    # the next event records the change since.
    _recorded: tuple[CaseState | None, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._recorded = (self.state, self.recovered_minor)

    # -- opening -----------------------------------------------------------------------------------------

    @classmethod
    def open(cls, *, case_id: str, vendor: str, original_order_id: str, failed_installment: int,
             replacement_kind: ReplacementKind, now: datetime, reminder_days: tuple[int, ...] = (),
             expire_after_days: int | None = None, grace: timedelta = timedelta(0),
             replacement_by: ReplacementBy = ReplacementBy.API) -> DunningCase:
        """Open a case; with a ``grace`` nothing happens before it ends, since the platform may retry the card."""
        if failed_installment < 1:
            raise CaseError(f"installment numbers start at 1, got {failed_installment}")
        case = cls(case_id, vendor, original_order_id, failed_installment, replacement_kind, CaseState.OPEN,
                   opened_at=now, updated_at=now, next_attempt_at=now + grace,
                   reminder_days=tuple(reminder_days), expire_after_days=expire_after_days,
                   replacement_by=replacement_by)
        case._recorded = (None, 0)  # the case did not exist before this event
        by_vendor = {"replacement_by": replacement_by.value} if replacement_by is ReplacementBy.VENDOR else {}
        case._record(now, "opened", installment=failed_installment, replacement_kind=replacement_kind.value,
                     **by_vendor, **({"grace_until": (now + grace).isoformat()} if grace else {}))
        return case

    # -- what to do next ---------------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self.state in ENDS

    @property
    def by_vendor(self) -> bool:
        """The vendor makes the replacement by hand in CopeCart (``replacement_by = "vendor"``)."""
        return self.replacement_by is ReplacementBy.VENDOR

    @property
    def next_step(self) -> Step | None:
        if self.state is CaseState.AWAITING_PAYMENT:
            return self._lifecycle_step()
        if self.state in VENDOR_WAITING:
            return Step.VENDOR_OVERDUE if self.vendor_reminders_sent >= self._vendor_days - 1 else \
                Step.SEND_VENDOR_REMINDER
        if self.by_vendor and self.state in _VENDOR_STEP_OF:
            return _VENDOR_STEP_OF[self.state]
        return _STEP_OF.get(self.state)

    @property
    def _vendor_days(self) -> int:
        """Days the vendor is reminded daily before a person follows the task up."""
        return max(self.expire_after_days or VENDOR_DAYS, 2)

    def idempotency_key(self, step: Step) -> str:
        return f"dunlink-{self.id}-{step.value}"

    def email_key(self, step: Step) -> str:
        """The ledger key of the email a step sends: one email per (case, key), however often it is tried."""
        if step is Step.SEND_REMINDER:
            return f"reminder_{self.reminders_sent + 1}"
        if step is Step.SEND_FINAL_NOTICE:
            return "final_notice"
        if step is Step.SEND_VENDOR_REMINDER:
            return f"vendor_reminder_{self.vendor_reminders_sent + 1}"
        return step.value

    @property
    def expires_at(self) -> datetime | None:
        if self.link_sent_at is None or self.expire_after_days is None:
            return None
        return self.link_sent_at + timedelta(days=self.expire_after_days)

    def _final_notice_day(self) -> int | None:
        """A final notice the day before expiry, when that day is after the last reminder."""
        if self.expire_after_days is None:
            return None
        day = self.expire_after_days - 1
        return day if day > (self.reminder_days[-1] if self.reminder_days else 0) else None

    def _lifecycle_step(self) -> Step | None:
        if self.reminders_sent < len(self.reminder_days):
            return Step.SEND_REMINDER
        if not self.final_notice_sent and self._final_notice_day() is not None:
            return Step.SEND_FINAL_NOTICE
        return Step.EXPIRE if self.expire_after_days is not None else None

    def _schedule(self) -> None:
        """When the next reminder, notice or the expiry falls due, counted from the day the link was sent."""
        step, sent = self._lifecycle_step(), self.link_sent_at
        if step is None or sent is None:
            self.next_attempt_at = None
        elif step is Step.SEND_REMINDER:
            self.next_attempt_at = sent + timedelta(days=self.reminder_days[self.reminders_sent])
        elif step is Step.SEND_FINAL_NOTICE:
            self.next_attempt_at = sent + timedelta(days=self._final_notice_day() or 0)
        else:
            self.next_attempt_at = self.expires_at

    @property
    def outstanding(self) -> Money | None:
        if self.currency is None or self.outstanding_minor is None:
            return None
        return Money(self.outstanding_minor, self.currency)

    def is_due(self, now: datetime) -> bool:
        return (self.state in ACTIVE and self.next_attempt_at is not None and self.next_attempt_at <= now
                and self.next_step is not None)

    # -- outcomes of steps -------------------------------------------------------------------------------

    def plan(self, original: InstallmentPlan, *, order_vendor: str, order_status: str, buyer: Buyer,
             product_id: str, product_name: str, today: date, now: datetime,
             undeliverable: str | None = None) -> None:
        """Fix the replacement once, from the original order, so a retried create sends the same body.

        Whatever would stop the case later is settled here, before the first effect on the platform: whose
        order it is, that the platform agrees the installment is unpaid, the plan's shape and amounts, and
        ``undeliverable``, what the caller found would keep the payment link from being emailed. A case that
        cannot finish goes to a person before it creates or cancels anything.
        """
        self._expect(CaseState.OPEN)
        if order_vendor != self.vendor:
            self.order_of_another_vendor(order_vendor=order_vendor, now=now)
            return
        if self.failed_installment > len(original.installments):
            self._hand_over(f"the IPN names installment {self.failed_installment}, but the original order has "
                            f"{len(original.installments)}: nothing was done; check the order", now,
                            step=Step.FETCH_ORIGINAL, code=REASON_INSTALLMENT_NOT_IN_PLAN,
                            params={"installment": self.failed_installment})
            return
        failed = original.installment(self.failed_installment)
        if failed.status is InstallmentStatus.PAID:
            # The platform knows of a payment the IPN did not (a retried card, or the payment's IPN acted on
            # before this one opened the case): nothing is owed for it, and waiting would not change that.
            self._close(CaseState.RESOLVED, now, "original_paid", installment=self.failed_installment)
            return
        if not platform_agrees(failed, today):
            self._wait_for_agreement(failed, now)
            return
        if order_status != "active":
            code = {"cancelled": REASON_ORIGINAL_CANCELLED, "completed": REASON_ORIGINAL_COMPLETED}.get(
                order_status, REASON_ORIGINAL_INACTIVE)
            self._hand_over(f"the original order is {order_status}: check it and make the link by hand", now,
                            step=Step.FETCH_ORIGINAL, code=code, params={"status": order_status})
            return
        if undeliverable is not None:
            self._hand_over(f"the payment link could not be emailed: {undeliverable}; nothing was done: correct "
                            "it on the platform, then retry", now, step=Step.FETCH_ORIGINAL,
                            code=REASON_LINK_UNDELIVERABLE)
            return
        try:
            owed, planned = self._replacement_of(original, today)
        except (PlanError, MoneyError) as exc:
            self._hand_over(f"no replacement can be planned from the original order: {exc}; nothing was done",
                            now, step=Step.FETCH_ORIGINAL, code=REASON_NO_REPLACEMENT_PLAN)
            return
        self.currency, self.outstanding_minor = owed.currency, owed.minor
        self.buyer, self.product_id, self.product_name = buyer, product_id, product_name
        if planned is None:
            self._close(CaseState.RESOLVED, now, "nothing_owed")
            return
        self.replacement = planned
        self._move(CaseState.PLANNED, now, "planned", outstanding=self.outstanding_minor,
                   installments=len(planned.installments))

    def order_of_another_vendor(self, *, order_vendor: str, now: datetime) -> None:
        """The platform says the original order is ``order_vendor``'s: an IPN signed with this case's vendor's
        secret named another vendor's order. Nothing is done to it; a person finds out who sent the IPN."""
        self._expect(CaseState.OPEN)
        self._hand_over(f"the original order belongs to vendor {order_vendor[:64]!r}, not {self.vendor!r} "
                        "whose secret signed the IPN: nothing was done; check who sent it", now,
                        step=Step.FETCH_ORIGINAL, code=REASON_ORDER_OF_ANOTHER_VENDOR)

    def _replacement_of(self, original: InstallmentPlan, today: date) -> tuple[Money, InstallmentPlan | None]:
        """What is owed and the replacement's plan; raises :class:`PlanError` or :class:`MoneyError`."""
        if original.installment(self.failed_installment).status is InstallmentStatus.OPEN:
            # Open and due: the platform has not recorded the failure the IPN reported (yet).
            original = original.with_status(self.failed_installment, InstallmentStatus.FAILED)
        for number, status in sorted(self.adjustments.items()):
            if 1 <= number <= len(original.installments) and \
                    original.installment(number).status is InstallmentStatus.PAID:
                original = original.with_status(number, status)
        owed = original.outstanding
        return owed, replacement_plan(original, kind=self.replacement_kind, failed_number=self.failed_installment,
                                      today=today)

    def _wait_for_agreement(self, installment: Installment, now: datetime) -> None:
        """Nothing is done while the platform shows the installment open and not due (or void, refunded...):
        look again later, waiting longer each time, and hand the case to a person once :data:`AGREEMENT_WAIT`
        is over."""
        shown = installment.status.value if installment.status is not InstallmentStatus.OPEN else \
            f"open and due on {installment.due_date.isoformat()}"
        deadline = self.opened_at + AGREEMENT_WAIT
        if now >= deadline:
            self._hand_over(f"the platform shows installment {installment.number} as {shown}, not failed, an hour "
                            "after the payment.failed IPN: nothing was done; check the order", now,
                            step=Step.FETCH_ORIGINAL, code=REASON_PLATFORM_DISAGREES,
                            params={"installment": installment.number})
            return
        wait = min(max(now - self.opened_at, _FIRST_LOOK_AGAIN), _LONGEST_LOOK_AGAIN)
        self.next_attempt_at = min(now + wait, deadline)
        self._record(now, "installment_not_failed", installment=installment.number, status=shown,
                     next_attempt_at=self.next_attempt_at.isoformat())

    # -- a replacement the vendor makes by hand ---------------------------------------------------------------

    def cannot_plan(self, reason: str, *, code: str, now: datetime, params: Mapping[str, Any] | None = None) -> None:
        """The IPNs seen do not settle what is owed (see ``platforms.copecart.owed``): a person checks the order
        in CopeCart, then confirms what was paid (:meth:`confirm_paid`) or resolves the case. Nothing was asked of
        anyone."""
        self._expect(CaseState.OPEN)
        self._hand_over(f"{reason}; nothing was done", now, step=Step.PLAN_FROM_IPNS, code=code, params=params)

    def confirm_paid(self, installments: tuple[int, ...], *, now: datetime) -> None:
        """A person checked in CopeCart that these earlier installments were paid: plan again with them."""
        if self.state is not CaseState.NEEDS_PERSON or self.failed_step is not Step.PLAN_FROM_IPNS:
            raise CaseError(f"case {self.id} is not waiting for installments to be confirmed ({self.state.value})")
        if not installments or any(not 1 <= n < self.failed_installment for n in installments):
            raise CaseError(f"only installments before the failed installment {self.failed_installment} can be "
                            "confirmed paid")
        self.confirmed_paid = tuple(sorted(set(self.confirmed_paid) | set(installments)))
        self._record(now, "installments_confirmed_paid", installments=list(self.confirmed_paid))
        self.retry(now=now)

    def vendor_task_sent(self, *, now: datetime) -> None:
        """The vendor has its task: wait for the link and the original's cancellation, reminding daily."""
        self._expect_step(Step.SEND_VENDOR_TASK)
        self.vendor_task_sent_at = now
        self._record(now, "vendor_task_sent")
        self._vendor_progress(now)

    def vendor_reminder_sent(self, *, now: datetime) -> None:
        self._expect_step(Step.SEND_VENDOR_REMINDER)
        self.vendor_reminders_sent += 1
        self._record(now, "vendor_reminder_sent", number=self.vendor_reminders_sent,
                     waiting_for=self.vendor_waiting_for)
        self.attempts = 0
        self._schedule_vendor()

    def vendor_overdue(self, *, now: datetime) -> None:
        """The vendor was reminded every day and did not finish: a person follows it up (``cases link`` and
        ``cases original-cancelled`` do the vendor's part; the buyer is emailed once both are recorded)."""
        self._expect_step(Step.VENDOR_OVERDUE)
        waiting = self.vendor_waiting_for
        self._hand_over(f"the vendor was reminded for {self.vendor_reminders_sent + 1} days and has not "
                        f"{'pasted the payment link' if waiting == 'link' else 'cancelled the original order'}",
                        now, step=Step.VENDOR_OVERDUE, code=REASON_VENDOR_DID_NOT_ACT,
                        params={"waiting_for": waiting, "days": self.vendor_reminders_sent + 1})

    @property
    def vendor_waiting_for(self) -> str:
        """What dunlink waits for from the vendor: ``link`` or ``original_cancelled`` (or ``nothing``)."""
        if self.payment_url is None:
            return "link"
        return "original_cancelled" if not self.original_known_cancelled else "nothing"

    def link_given(self, *, payment_url: str, order_id: str | None, now: datetime) -> bool:
        """The vendor pasted the link of the replacement it made (checked against its payment hosts by the
        caller). False when nothing changed (the same link again). A different link replaces the first only
        while the buyer has not been emailed; after that it is refused.

        A case waiting for a person because the phone offer could not make the link resumes.
        """
        self._expect_vendor_case()
        if order_id is not None and (not order_id.strip() or len(order_id) > 128 or not order_id.isprintable()):
            raise CaseError("the order id must be printable text of at most 128 characters")
        if payment_url == self.payment_url:
            if order_id is None or order_id == self.replacement_order_id:
                return False
            if self.replacement_order_id is None and not self.is_closed:
                # The same link, now with its order's id: matching the buyer's payment gets easier.
                self.replacement_order_id = order_id
                self._record(now, "link_order_given", order=order_id)
                return True
        sending = CaseState.ORIGINAL_CANCELLED in (self.state, self.resume_state)
        if self.link_sent_at is not None or sending or self.failed_step is Step.SEND_LINK or \
                self.state not in (CaseState.PLANNED, CaseState.NEEDS_PERSON, *VENDOR_WAITING):
            raise LinkAlreadySent(f"case {self.id} is {self.state.value}: the buyer has been emailed a link "
                                  "already or the case is over; a new link is not sent")
        replaced = self.payment_url
        self.payment_url = payment_url
        self.replacement_order_id = order_id or (self.replacement_order_id if replaced is None else None)
        self._record(now, "link_given", order=self.replacement_order_id, **({"replaced": True} if replaced else {}))
        if self.state is CaseState.NEEDS_PERSON:
            if self.failed_step not in (Step.SEND_VENDOR_REMINDER, Step.VENDOR_OVERDUE):
                return True  # a person handles something else; the link is kept for when they retry
            self.cannot_generate = False
            self.reason = self.reason_code = self.failed_step = self.resume_state = None
            self.reason_params = {}
        if self.vendor_task_sent_at is not None or self.state is not CaseState.PLANNED:
            self._vendor_progress(now)
        return True

    def original_cancel_known(self, *, now: datetime, by: str) -> bool:
        """The original order is cancelled in CopeCart: the vendor said so (``by`` ``vendor_page``, ``cli``) or
        CopeCart's ``payment.recurring.cancelled`` IPN for it arrived (``ipn``). False when already known."""
        self._expect_vendor_case()
        if self.original_known_cancelled:
            return False
        self.original_known_cancelled = True
        self._record(now, "original_cancel_known", order=self.original_order_id, by=by)
        if self.state is CaseState.NEEDS_PERSON and self.failed_step in (Step.SEND_VENDOR_REMINDER,
                                                                          Step.VENDOR_OVERDUE) \
                and self.payment_url is not None:
            # Handed over while waiting for the vendor, who has now done both: on to the buyer's email.
            self.cannot_generate = False
            self.reason = self.reason_code = self.failed_step = self.resume_state = None
            self.reason_params = {}
            self._vendor_progress(now)
        elif self.state in VENDOR_WAITING:
            self._vendor_progress(now)
        return True

    def cannot_generate_link(self, *, now: datetime) -> None:
        """The vendor found that the phone offer cannot make the link: a person takes over (the exception
        steps: the seller DunningCopeCart, CopeCart's support). A link given later resumes the case."""
        self._expect_vendor_case()
        if self.payment_url is not None or self.state is not CaseState.AWAITING_VENDOR_LINK:
            if self.state is CaseState.NEEDS_PERSON and self.cannot_generate:
                return
            raise CaseError(f"case {self.id} is {self.state.value}: it is not waiting for a link")
        self.cannot_generate = True
        self._hand_over("the vendor says CopeCart's phone offer cannot make the payment link: add the seller "
                        "DunningCopeCart to the product or ask CopeCart's support, then give the link with "
                        "'dunlink cases link'", now, step=Step.SEND_VENDOR_REMINDER,
                        code=REASON_CANNOT_GENERATE_LINK)

    def payment_ambiguous(self, *, order_id: str, candidates: int, now: datetime) -> None:
        """A payment on an order the vendor made fits this case and others of the same buyer and product:
        which one it pays is a person's call (``dunlink cases resolve`` or a recovery recorded by hand)."""
        waiting = self.state if self.state in (CaseState.AWAITING_PAYMENT, *VENDOR_WAITING,
                                                CaseState.ORIGINAL_CANCELLED) else None
        self._hand_over(f"a payment on order {order_id[:128]} fits {candidates} cases of this buyer and product: "
                        "check which one it pays; 'dunlink cases retry' puts a case it did not pay back to waiting",
                        now, step=None, code=REASON_PAYMENT_AMBIGUOUS,
                        params={"order": order_id[:128], "cases": candidates})
        self.resume_state = waiting

    def link_to_deactivate_told(self, *, now: datetime) -> None:
        """The vendor was told to deactivate the link dunlink cannot withdraw: the case ends."""
        self._expect(CaseState.DEACTIVATING_LINK)
        if self.reason == DEACTIVATE_EXPIRED:
            self._close(CaseState.LOST, now, "expired", order=self.replacement_order_id)
        else:
            self._close(CaseState.RESOLVED, now, "link_withdrawn", order=self.replacement_order_id)

    def _vendor_progress(self, now: datetime) -> None:
        """Move on from what the vendor has done: the buyer's email only once the link is recorded and the
        original known cancelled; until then, wait (and remind daily) for what is missing."""
        if self.payment_url is not None and self.original_known_cancelled:
            self._move(CaseState.ORIGINAL_CANCELLED, now, "original_cancelled", order=self.original_order_id)
            if self.recovered_minor:
                # The buyer paid the new order before the original was known cancelled: nothing left to send.
                self._close(CaseState.RECOVERED, now, "recovered", amount=self.recovered_minor)
            return
        state = CaseState.AWAITING_VENDOR_LINK if self.payment_url is None else CaseState.AWAITING_ORIGINAL_CANCEL
        if state is not self.state:
            self._move(state, now, "waiting_for_vendor", waiting_for=self.vendor_waiting_for)
        self._schedule_vendor()

    def _schedule_vendor(self) -> None:
        """The vendor's reminders fall due daily, counted from the task email."""
        sent = self.vendor_task_sent_at
        self.next_attempt_at = sent + timedelta(days=self.vendor_reminders_sent + 1) if sent else None

    def _expect_vendor_case(self) -> None:
        if not self.by_vendor:
            raise CaseError(f"case {self.id}: its vendor makes replacements through the order API, not by hand")

    def replacement_created(self, *, order_id: str, payment_url: str, now: datetime) -> None:
        self._expect(CaseState.PLANNED)
        self.replacement_order_id, self.payment_url = order_id, payment_url
        self._move(CaseState.REPLACEMENT_CREATED, now, "replacement_created", order=order_id)

    def original_cancelled(self, *, now: datetime) -> None:
        self._expect(CaseState.REPLACEMENT_CREATED)
        self._move(CaseState.ORIGINAL_CANCELLED, now, "original_cancelled", order=self.original_order_id)
        if self.recovered_minor:
            # The replacement was paid while the original was still being cancelled: no link to send.
            self._close(CaseState.RECOVERED, now, "recovered", amount=self.recovered_minor)

    def link_sent(self, *, now: datetime) -> None:
        self._expect(CaseState.ORIGINAL_CANCELLED)
        self.link_sent_at = now
        self._move(CaseState.AWAITING_PAYMENT, now, "link_sent")
        self._schedule()

    def reminder_sent(self, *, now: datetime) -> None:
        self._expect_step(Step.SEND_REMINDER)
        self.reminders_sent += 1
        self._record(now, "reminder_sent", number=self.reminders_sent)
        self.attempts = 0
        self._schedule()

    def final_notice_done(self, *, now: datetime) -> None:
        self._expect_step(Step.SEND_FINAL_NOTICE)
        self.final_notice_sent = True
        self._record(now, "final_notice_sent")
        self.attempts = 0
        self._schedule()

    def expired(self, *, now: datetime) -> None:
        """The replacement was cancelled at the end of the vendor's deadline: the case is lost."""
        self._expect_step(Step.EXPIRE)
        if self.by_vendor:
            # dunlink cannot cancel what the vendor made: the vendor is told to deactivate the link, then lost.
            self._withdraw(DEACTIVATE_EXPIRED, now, "deadline_passed", state=CaseState.DEACTIVATING_LINK)
            return
        self._close(CaseState.LOST, now, "expired", order=self.replacement_order_id)

    def replacement_cancelled(self, *, now: datetime, order_id: str | None = None) -> None:
        """The replacement is withdrawn; ``order_id`` names it when it was only found while withdrawing."""
        self._expect(CaseState.CANCELLING_REPLACEMENT)
        self.replacement_order_id = self.replacement_order_id or order_id
        self._close(CaseState.RESOLVED, now, "replacement_withdrawn", order=self.replacement_order_id)

    # -- what the platform tells us ----------------------------------------------------------------------

    def original_paid(self, *, installment: int, now: datetime, amount: Money | None = None) -> None:
        """The buyer paid the original's failed installment after all (the platform retried the card).

        ``amount`` is what the payment IPN says was paid, when one says it; a payment that is not positive goes
        to a person.
        """
        if amount is not None and (problem := self._payment_problem(amount, on="original")) is not None:
            self._hand_over(problem, now, step=None, code=REASON_PAYMENT_NOT_COUNTABLE)
            return
        where = self.resume_state if self.state is CaseState.NEEDS_PERSON else self.state
        if self.by_vendor and not self.is_closed and installment > self.failed_installment \
                and self.link_sent_at is None and where in (CaseState.PLANNED, *VENDOR_WAITING):
            # CopeCart charged a later installment of the original: the plan the vendor was given asks for it again.
            self._hand_over(f"installment {installment} was paid on the original order while the replacement was "
                            "being made: the amounts the vendor was given ask for it again; adjust the new order",
                            now, step=None, code=REASON_LATER_INSTALLMENT_PAID, params={"installment": installment})
            return
        if self.is_closed or installment != self.failed_installment:
            self._record(now, "payment_ignored", order=self.original_order_id, installment=installment)
            return
        if self.by_vendor and self.original_known_cancelled and self.link_sent_at is None \
                and where in (CaseState.PLANNED, *VENDOR_WAITING):
            # Paid on an order the vendor said is cancelled: the later installments have no order to collect them.
            self._hand_over(PAID_AFTER_CANCEL + (" (and deactivate the new link)" if self.payment_url else ""), now,
                            step=None, code=REASON_PAID_AFTER_CANCEL, params={"installment": installment})
            return
        if self.by_vendor and self.payment_url is not None and (
                where in VENDOR_WAITING or self.state is CaseState.DEACTIVATING_LINK):
            # The vendor may have made a link already: tell it to deactivate the link, then the case ends.
            self._withdraw(WITHDRAW_ORIGINAL_PAID, now, "original_paid", state=CaseState.DEACTIVATING_LINK,
                           installment=installment)
        elif where is CaseState.OPEN or (self.by_vendor and where in (CaseState.PLANNED, *VENDOR_WAITING)):
            self._close(CaseState.RESOLVED, now, "original_paid")
        elif where in (CaseState.PLANNED, CaseState.REPLACEMENT_CREATED, CaseState.CANCELLING_REPLACEMENT):
            # From planned too: a create may have reached the platform even though its answer never came back.
            self._withdraw(WITHDRAW_ORIGINAL_PAID, now, "original_paid", installment=installment)
        else:
            self._hand_over(PAID_AFTER_CANCEL, now, step=None, code=REASON_PAID_AFTER_CANCEL,
                            params={"installment": installment})

    def original_found_cancelled(self, *, now: datetime) -> None:
        """Withdrawing the replacement, dunlink found the original already cancelled (a cancel whose answer was
        lost took effect): the buyer's payment sits on a cancelled order, which is a person's matter."""
        self._expect(CaseState.CANCELLING_REPLACEMENT)
        self._hand_over(PAID_AFTER_CANCEL, now, step=None, code=REASON_PAID_AFTER_CANCEL,
                        params={"installment": self.failed_installment})

    def _withdraw(self, why: str, now: datetime, kind: str, *, state: CaseState = CaseState.CANCELLING_REPLACEMENT,
                  **detail: Any) -> None:
        self.failed_step = self.resume_state = None
        self.attempts = 0
        self._move(state, now, kind, **detail)
        self.reason, self.reason_code, self.reason_params = why, None, {}

    def replacement_paid(self, *, amount: Money, now: datetime) -> None:
        """The buyer paid the replacement: a recovery, unless the original was paid too or a person reconciles.

        A payment that could not be counted (not positive, in another currency, beyond what can be stored)
        goes to a person instead.
        """
        if (problem := self._payment_problem(amount, on="replacement")) is not None:
            self._hand_over(problem, now, step=None, code=REASON_PAYMENT_NOT_COUNTABLE)
            return
        if self.state in (CaseState.RECOVERED, CaseState.LOST, CaseState.RESOLVED):
            if self.state is CaseState.RECOVERED:
                self.recovered_minor += amount.minor
                self._record(now, "replacement_paid", amount=amount.minor)
            else:
                self._hand_over("paid on a replacement after the case was closed: reconcile", now, step=None,
                                code=REASON_PAID_AFTER_CLOSE, params={"amount": amount.minor})
            return
        where = self.resume_state if self.state is CaseState.NEEDS_PERSON else self.state
        if where in (CaseState.CANCELLING_REPLACEMENT, CaseState.DEACTIVATING_LINK) and \
                self.reason != DEACTIVATE_EXPIRED:
            # The original's installment was paid as well: closing as recovered would hide the double payment.
            self._record(now, "replacement_paid", amount=amount.minor)
            self._hand_over(PAID_TWICE, now, step=None, code=REASON_PAID_TWICE, params={"amount": amount.minor})
            return
        if self.state is CaseState.NEEDS_PERSON and self.failed_step is None:
            # A person is already reconciling a payment; a recovery now would close the case under them.
            self._record(now, "replacement_paid", amount=amount.minor)
            return
        self.recovered_minor += amount.minor
        if where in (CaseState.REPLACEMENT_CREATED, *VENDOR_WAITING):
            # Paid before the original was cancelled: the cancel still has to happen, then the case is recovered.
            self._record(now, "replacement_paid", amount=amount.minor)
            return
        self._close(CaseState.RECOVERED, now, "recovered", amount=amount.minor)

    def _payment_problem(self, amount: Money, *, on: str) -> str | None:
        """Why a payment cannot be taken as it is, or None: a person reconciles anything else."""
        if not amount.is_positive:
            return f"a payment of {amount} on the {on}: payments must be positive; check it on the platform"
        if self.currency is not None and amount.currency != self.currency:
            return f"a payment in {amount.currency} on the {on} of a case in {self.currency}: reconcile"
        if self.recovered_minor + amount.minor > MAX_MINOR:
            return f"payments on the {on} add up to more than can be stored: reconcile"
        return None

    def installment_refunded(self, *, installment: int, status: InstallmentStatus, now: datetime) -> None:
        """A paid installment was refunded or charged back: owed again before the replacement is made, a
        person's matter after (the replacement's amount can no longer change under its idempotency key)."""
        if status not in (InstallmentStatus.REFUNDED, InstallmentStatus.CHARGED_BACK):
            raise CaseError(f"not a refund or charge-back: {status.value}")
        self._record(now, status.value, installment=installment)
        if self.is_closed:
            return
        where = self.resume_state if self.state is CaseState.NEEDS_PERSON else self.state
        if where is CaseState.OPEN or (where is CaseState.PLANNED and self.attempts == 0
                                       and self.state is not CaseState.NEEDS_PERSON):
            self.adjustments[installment] = status
            if self.state is CaseState.PLANNED:
                # Not yet sent to the platform: plan again from the original with the installment owed.
                self.replacement = None
                self._move(CaseState.OPEN, now, "replanning", installment=installment)
            return
        refunded = status is InstallmentStatus.REFUNDED
        self._hand_over(f"{'refund' if refunded else 'charge-back'} of installment {installment} after the "
                        "replacement was made: adjust the replacement by hand", now, step=None,
                        code=REASON_REFUNDED_AFTER_REPLACEMENT if refunded else REASON_CHARGED_BACK_AFTER_REPLACEMENT,
                        params={"installment": installment})

    def plan_cancelled(self, *, now: datetime) -> None:
        """The original's installment plan was cancelled on the platform (not by dunlink): stop dunning."""
        if self.is_closed:
            self._record(now, "plan_cancelled")
            return
        where = self.resume_state if self.state is CaseState.NEEDS_PERSON else self.state
        if self.by_vendor and self.vendor_task_sent_at is not None:
            # The vendor was asked to cancel the original: CopeCart's IPN says it is done.
            if not self.original_cancel_known(now=now, by="ipn"):
                self._record(now, "plan_cancelled")
            return
        if where is CaseState.OPEN or (self.by_vendor and where is CaseState.PLANNED):
            self._close(CaseState.RESOLVED, now, "plan_cancelled")
        elif where in (CaseState.PLANNED, CaseState.REPLACEMENT_CREATED):
            self._withdraw(WITHDRAW_PLAN_CANCELLED, now, "plan_cancelled")
        else:  # dunlink cancelled the original itself; the platform reports the consequence
            self._record(now, "plan_cancelled")

    def event_failed(self, *, event_type: str, error: str, now: datetime) -> None:
        """An event about this case cannot be applied, however often it is tried: dunlink stops here and a
        person reads what the platform sent (the event stays in the inbox, marked failed, with the error)."""
        self._hand_over(f"a {event_type[:64]} event could not be applied: {error}", now, step=None,
                        code=REASON_EVENT_FAILED)

    def apply(self, event: PaymentEvent, *, on_replacement: bool, now: datetime) -> str:
        """What a payment event about this case does, decided here; returns the outcome the inbox records.

        ``on_replacement``: the event is about the case's replacement order (its payment), not the original.
        """
        if event.event_type == MADE and event.amount is not None:
            if on_replacement:
                self.replacement_paid(amount=event.amount, now=now)
                return "recovered" if self.state is not CaseState.NEEDS_PERSON else "needs_person"
            self.original_paid(installment=event.rate_number or 0, amount=event.amount, now=now)
            return f"original_paid:{self.state.value}"
        if event.event_type in (REFUNDED, CHARGED_BACK) and not on_replacement and event.rate_number is not None:
            status = InstallmentStatus.REFUNDED if event.event_type == REFUNDED else InstallmentStatus.CHARGED_BACK
            self.installment_refunded(installment=event.rate_number, status=status, now=now)
            return f"{status.value}:{self.state.value}"
        if event.event_type == RECURRING_CANCELLED and not on_replacement:
            self.plan_cancelled(now=now)
            return f"plan_cancelled:{self.state.value}"
        self.note(event.event_type, now=now, order=event.order_id, installment=event.rate_number)
        return "recorded"

    def note(self, kind: str, *, now: datetime, **detail: Any) -> None:
        """Record something the platform told us that does not change the case (yet)."""
        self._record(now, kind, **detail)

    # -- failures and people -----------------------------------------------------------------------------

    def step_failed(self, step: Step, *, error: str, transient: bool, now: datetime, policy: RetryPolicy,
                    jitter: float, code: str | None = None, params: Mapping[str, Any] | None = None) -> None:
        """Record a failed attempt: schedule the next one, or hand the case to a person with the reason.

        ``code`` names a failure more precisely than the step's own code, for a caller that knows it.
        """
        if self.next_step is not step:
            raise CaseError(f"case {self.id} is not at step {step.value} (state {self.state.value})")
        self.attempts += 1
        if transient and self.attempts < policy.max_attempts:
            self.next_attempt_at = now + policy.delay(self.attempts, jitter)
            self._record(now, "step_retry", step=step.value, attempt=self.attempts, error=error,
                         next_attempt_at=self.next_attempt_at.isoformat())
            self.updated_at = now
            return
        why = f"{step.value} failed: {error}" if not transient else (
            f"{step.value} still failing after {self.attempts} attempts: {error}")
        if code is None:
            unavailable = REASON_MAIL_SERVER_UNAVAILABLE if step.is_email else REASON_PLATFORM_UNAVAILABLE
            code = unavailable if transient else step_failed_code(step)
        self._hand_over(why, now, step=step, code=code, params={"attempts": self.attempts, **(params or {})})

    def retry(self, *, now: datetime) -> None:
        """A person asks dunlink to try again from the step that failed."""
        self._expect(CaseState.NEEDS_PERSON)
        if self.resume_state is None or self.resume_state not in ACTIVE:
            raise CaseError(f"case {self.id} has no failed step to retry: {self.reason}")
        self.attempts = 0
        resumed = self.resume_state
        self._move(resumed, now, "retry_requested")
        self.reason = self.reason_code = self.failed_step = self.resume_state = None
        self.reason_params = {}
        self.next_attempt_at = now
        if resumed is CaseState.AWAITING_PAYMENT:
            self._schedule()  # back to waiting for the buyer: the reminders and expiry keep their days
        elif resumed in VENDOR_WAITING:
            # The vendor's days start again, and what is already known moves the case on.
            self.vendor_task_sent_at, self.vendor_reminders_sent, self.cannot_generate = now, 0, False
            self._vendor_progress(now)

    def resolve(self, *, note: str, now: datetime) -> None:
        """A person closed the case by hand, for instance after making the payment link themselves."""
        if self.is_closed:
            raise CaseError(f"case {self.id} is already {self.state.value}")
        if not note.strip():
            raise CaseError("a note is required to resolve a case by hand")
        self._close(CaseState.RESOLVED, now, "resolved_by_hand", note=note)

    # -- internals ---------------------------------------------------------------------------------------

    def _hand_over(self, reason: str, now: datetime, *, step: Step | None, code: str | None = None,
                   params: Mapping[str, Any] | None = None) -> None:
        """Wait for a person: ``reason`` for operators, ``code`` and ``params`` for emails (no code: the
        emails say only that the case needs a person)."""
        if self.state is not CaseState.NEEDS_PERSON:
            self.resume_state = self.state if step is not None else None
        self.reason, self.failed_step = reason, step
        self.reason_code, self.reason_params = code, dict(params or {})
        detail = {**self.reason_params, "reason": reason, "step": step.value if step else None, "code": code}
        self._move(CaseState.NEEDS_PERSON, now, "needs_person", **detail)
        self.next_attempt_at = None

    def _expect_step(self, step: Step) -> None:
        if self.next_step is not step:
            raise CaseError(f"case {self.id} is not at step {step.value} (state {self.state.value})")

    def _expect(self, *states: CaseState) -> None:
        if self.state not in states:
            wanted = " or ".join(s.value for s in states)
            raise CaseError(f"case {self.id} is {self.state.value}, not {wanted}")

    def _move(self, state: CaseState, now: datetime, kind: str, **detail: Any) -> None:
        self.state = state
        self.attempts = 0 if state is not CaseState.NEEDS_PERSON else self.attempts
        self.next_attempt_at = now
        self._record(now, kind, **detail)

    def _close(self, state: CaseState, now: datetime, kind: str, **detail: Any) -> None:
        self._move(state, now, kind, **detail)
        self.closed_at, self.next_attempt_at = now, None
        self.reason = self.reason_code = self.failed_step = self.resume_state = None
        self.reason_params = {}

    def _record(self, now: datetime, kind: str, **detail: Any) -> None:
        self.updated_at = now
        state_before, recovered_before = self._recorded
        self.events.append(CaseEvent(now, kind, detail, state_before, self.state,
                                     self.recovered_minor - recovered_before))
        self._recorded = (self.state, self.recovered_minor)

    def snapshot(self) -> DunningCase:
        copy = replace(self, events=list(self.events))
        copy._recorded = self._recorded
        return copy

