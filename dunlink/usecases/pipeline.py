"""The dunning pipeline's use cases: thin glue between stored work, the domain and the adapters.

Each function loads ids, asks the domain what to do, performs at most one outbound effect per step with the
step's idempotency key, and commits the outcome before the next step starts. The Celery tasks call these;
so can tests and the ops CLI, with the same guarantees.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import structlog

from adapters.db.repositories import DuplicateOpenCase
from adapters.email.message import compose, mailbox
from adapters.email.port import MailError, TransientMailError
from adapters.email.render import (
    FinalNoticeContext,
    PaymentLinkContext,
    ReminderContext,
    ScheduleLine,
    format_money,
)
from adapters.platform.errors import OrderCompleted, PlatformError, Rejected, TransientPlatformError
from adapters.platform.port import Buyer as PlatformBuyer
from adapters.platform.port import NewOrder, Order, Plan
from domain import events as ipn
from domain.case import WITHDRAW_ORIGINAL_PAID, Buyer, CaseError, DunningCase, Step
from domain.money import Money
from domain.plans import InstallmentPlan
from dunlink.config.logs import bind_case, clear_context
from dunlink.config.vendors import Vendor
from dunlink.usecases import payment_links
from dunlink.usecases.ports import Outcome, Services, UnitOfWork, Work, publish
from dunlink.usecases.vendor_made import plan_from_ipns, vendor_message
from platforms.registry import DEFAULT as DEFAULT_PLATFORM
from platforms.registry import platform_named

log = structlog.get_logger("dunlink.pipeline")

MAX_STEPS_PER_RUN = 8
RELAY_BATCH = 500


class StepFailed(Exception):
    """A step that cannot succeed as things are; the message becomes the case's reason for a person."""


def is_transient(exc: Exception) -> bool:
    """Whether a failed step or event may succeed if tried again later.

        transient: the adapters' TransientPlatformError and TransientMailError (timeouts, 5xx, 429, SMTP 4xx),
                   and any error nobody foresaw (tried again within a bound, then handed to a person)
        permanent: every other PlatformError and MailError (4xx, refused addresses), StepFailed, bad data
                   (ValueError: plan, money, IPN field and shape errors) and a case refusing a step (CaseError)
    """
    if isinstance(exc, (TransientPlatformError, TransientMailError)):
        return True
    return not isinstance(exc, (PlatformError, MailError, StepFailed, ValueError, CaseError))


def new_case_id() -> str:
    return secrets.token_hex(8)


def wake(services: Services, case_id: str, step: Step | None) -> None:
    """Publish the wake-up for the case's next step, on the queue of its kind."""
    if step is None:
        return
    if step.is_email:
        publish(services, Work.SEND_EMAIL, [case_id])
    else:
        publish(services, Work.ADVANCE_CASE, [case_id])


def _safe_wake(services: Services, case_id: str, step: Step | None) -> None:
    try:
        wake(services, case_id, step)
    except Exception as exc:  # the relay finds the stored work again; the broker being down is not fatal here
        log.warning("enqueue_failed", case=case_id, error=type(exc).__name__)


# -- events -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventOutcome:
    outcome: str
    case_id: str | None = None
    next_step: Step | None = None
    busy: bool = False
    # A case opened with its lease taken, and the lease's end, for the same run to go on with.
    leased: tuple[DunningCase, datetime] | None = None


ALREADY_PROCESSED = "already_processed"


def handle_event(services: Services, event_id: int, *, run_platform_steps: bool = False) -> EventOutcome:
    """Act on one stored webhook event, once: the event is marked processed in the same transaction.

    With ``run_platform_steps`` (a worker on the platform queue), platform steps the event made due run here
    and now instead of being published to that same queue: one task fewer per case. An event that cannot be
    applied is recorded as failed (see :func:`_event_failed`), so it is never re-sent forever.
    """
    now = services.clock()
    try:
        result = _apply_event(services, event_id, now,
                              lease_until=now + services.lease if run_platform_steps else None)
    except Exception as exc:
        return _event_failed(services, event_id, exc, now)
    if result.busy or result.outcome == ALREADY_PROCESSED or not result.case_id:
        return result
    if run_platform_steps and result.next_step is not None and not result.next_step.is_email:
        advance_case(services, result.case_id, leased=result.leased)
    else:
        _safe_wake(services, result.case_id, result.next_step)
    return result


def _apply_event(services: Services, event_id: int, now: datetime, *, lease_until: datetime | None) -> EventOutcome:
    """Decide what the event does and mark it processed, in one transaction."""
    with services.uow() as uow:
        row = uow.inbox.lock(event_id)  # a copy of this task (the relay's, `dunlink due`) waits, then finds it done
        if row is None or row.processed_at is not None:
            return EventOutcome(ALREADY_PROCESSED, row.case_id if row else None)
        vendor = services.vendors.get(row.vendor)
        event = platform_named(vendor.platform if vendor else DEFAULT_PLATFORM).event_of(row.body)
        bind_case({"event_id": event_id, "vendor": row.vendor, "order": event.order_id})
        result = _decide(services, uow, row.vendor, event, now, lease_until=lease_until)
        if result.busy:
            return result
        uow.inbox.mark_processed(event_id, outcome=result.outcome, case_id=result.case_id, now=now)
        uow.commit()
    if result.case_id:
        bind_case({"case": result.case_id})
    log.info("event_processed", event_type=event.event_type, outcome=result.outcome)
    return result


def _event_failed(services: Services, event_id: int, exc: Exception, now: datetime) -> EventOutcome:
    """Count a failed attempt at an event; once it failed for good (a permanent error, or
    ``DUNLINK_EVENT_MAX_ATTEMPTS`` attempts), mark it processed as failed with the error, so the relay stops
    re-sending it, and hand its case, if it has one, to a person with the reason.

    A case that another worker holds is not touched: the event is tried again shortly, as a busy case is.
    """
    error = f"{type(exc).__name__}: {exc}"[:500]
    with services.uow() as uow:
        row = uow.inbox.lock(event_id)
        if row is None or row.processed_at is not None:
            return EventOutcome(ALREADY_PROCESSED, row.case_id if row else None)
        attempts = row.attempts + 1
        if is_transient(exc) and attempts < services.settings.event_max_attempts:
            uow.inbox.record_attempt(event_id, error=error)
            uow.commit()
            log.warning("event_retry", event_id=event_id, attempt=attempts, error=error[:200])
            return EventOutcome("retry_later")
        found = _case_of_event(uow, row.vendor, row.order_id)
        case = uow.cases.claim_case(found.id, now=now, until=now + services.lease) if found else None
        if found is not None and case is None:
            return EventOutcome("case_busy", found.id, busy=True)
        if case is not None:
            case.event_failed(event_type=row.event_type, error=error, now=now)
            uow.cases.save(case, lease_until=None)
        uow.inbox.mark_failed(event_id, error=error, case_id=case.id if case else None, now=now)
        uow.commit()
    log.warning("event_failed", event_id=event_id, event_type=row.event_type, attempts=attempts,
                case=case.id if case else None, error=error[:200])
    return EventOutcome("failed", case.id if case else None)


def _case_of_event(uow: UnitOfWork, vendor: str, order_id: str | None) -> DunningCase | None:
    """The case an event is about: the one whose replacement it names, else the open case of its order."""
    if not order_id:
        return None
    return uow.cases.by_replacement(vendor, order_id) or uow.cases.open_for_order(vendor, order_id)


def _hand_made_order_paid(services: Services, uow: UnitOfWork, vendor: str, event: ipn.PaymentEvent,
                          now: datetime) -> EventOutcome | None:
    """Match a payment on an unknown order to the vendor's case whose hand-made link it pays: the same buyer
    (email without case) and product, the first payment of a new order (dunlink saw nothing of it before the
    vendor's task) for the replacement's first amount. One match becomes that case's replacement (recorded, then
    paid below). None: no such case. Several: each goes to a person, since guessing could mark the wrong
    buyer's case paid."""
    if event.buyer_email is None or not event.product_id or event.rate_number not in (None, 1):
        return None
    first_seen = uow.inbox.first_received(vendor, event.order_id)
    candidates = [
        c for c in uow.cases.linked_cases_of_buyer(vendor, buyer_email=event.buyer_email, product_id=event.product_id)
        if c.replacement_order_id in (None, event.order_id)
        and (event.amount is None or c.replacement is None or c.replacement.installments[0].amount == event.amount)
        and (first_seen is None or c.vendor_task_sent_at is None or first_seen >= c.vendor_task_sent_at)]
    if not candidates:
        return None
    for candidate in candidates:
        case = uow.cases.claim_case(candidate.id, now=now, until=now + services.lease)
        if case is None:
            return EventOutcome("case_busy", candidate.id, busy=True)
        if len(candidates) == 1:
            case.replacement_order_id = event.order_id
            case.note("replacement_order_matched", now=now, order=event.order_id, by="buyer_and_product")
        else:
            case.payment_ambiguous(order_id=event.order_id, candidates=len(candidates), now=now)
        uow.cases.save(case)
        uow.cases.release(case.id)
    return None if len(candidates) == 1 else EventOutcome("payment_ambiguous", candidates[0].id)


def _tracked(uow: UnitOfWork, vendor: str, event: ipn.PaymentEvent) -> DunningCase | None:
    """The case whose payment link a payment came through: its id carried back in the link's tracking, for this
    vendor (a tracking value naming another vendor's case is ignored)."""
    case_id = payment_links.tracked_case_id(event.tracking) if event.event_type == ipn.MADE else None
    case = uow.cases.get(case_id) if case_id else None
    return case if case is not None and case.vendor == vendor and case.replacement_order_id is not None else None


def _decide(services: Services, uow: UnitOfWork, vendor: str, event: ipn.PaymentEvent,
            now: datetime, *, lease_until: datetime | None = None) -> EventOutcome:
    """What the event does. A case opened due now is stored with its lease taken until ``lease_until``
    (when given), so the caller runs its first steps without claiming it again."""
    if not event.acted_on:
        return EventOutcome("not_acted_on")
    policy = services.vendors[vendor].policy if vendor in services.vendors else None
    if event.event_type == ipn.FAILED:
        if not event.starts_dunning or event.rate_number is None:
            return EventOutcome("not_dunned")
        if policy is None:
            return EventOutcome("unknown_vendor")
        # No look-up first: the open-case index refuses a second case for the order in the same statement.
        opened = DunningCase.open(case_id=new_case_id(), vendor=vendor, original_order_id=event.order_id,
                                  failed_installment=event.rate_number, replacement_kind=policy.replacement, now=now,
                                  reminder_days=policy.reminder_days, expire_after_days=policy.expire_after_days,
                                  grace=timedelta(hours=policy.grace_hours), replacement_by=policy.replacement_by)
        due = opened.is_due(now)
        lease = lease_until if due and opened.next_step is not None and not opened.next_step.is_email else None
        try:
            uow.cases.add(opened, lease_until=lease)
        except DuplicateOpenCase:
            other = uow.cases.open_for_order(vendor, event.order_id)
            return EventOutcome("case_already_open", other.id if other else None)
        # Within a grace period nothing is woken: the relay picks the case up once the grace is over.
        return EventOutcome("case_opened", opened.id, opened.next_step if due else None,
                            leased=(opened, lease) if lease else None)

    paid_replacement = uow.cases.by_replacement(vendor, event.order_id) or _tracked(uow, vendor, event)
    found = paid_replacement or uow.cases.open_for_order(vendor, event.order_id)
    if found is None and event.event_type == ipn.MADE and vendor in services.vendors \
            and services.vendors[vendor].by_vendor and event.buyer_email:
        # A payment on an order dunlink never saw made: the buyer paying the one the vendor made by hand?
        matched = _hand_made_order_paid(services, uow, vendor, event, now)
        if matched is not None:
            return matched
        paid_replacement = found = uow.cases.by_replacement(vendor, event.order_id)
    if found is None:
        return EventOutcome("no_case")
    # The case is read again with its lease: a worker may have committed a step (a replacement created, the
    # original cancelled) since it was found, and the event must act on that, not on what was found.
    case = uow.cases.claim_case(found.id, now=now, until=now + services.lease)
    if case is None:
        return EventOutcome("case_busy", found.id, busy=True)
    outcome = case.apply(event, on_replacement=paid_replacement is not None, now=now)
    uow.cases.save(case)
    uow.cases.release(case.id)
    return EventOutcome(outcome, case.id, case.next_step)


# -- platform steps -----------------------------------------------------------------------------------------


def advance_case(services: Services, case_id: str, *, max_steps: int = MAX_STEPS_PER_RUN,
                 leased: tuple[DunningCase, datetime] | None = None) -> str:
    """Run the case's platform steps one by one until it waits for email, the buyer, a retry or a person.

    ``max_steps`` bounds one run; an operator (or a test) may take a case forward a single step at a time.
    ``leased`` is a case whose lease the caller already holds (just opened), with the lease's end.
    """
    if leased is not None:
        case, lease = leased
    else:
        claimed = _claim(services, case_id)
        if claimed is None:
            return "busy_or_gone"
        case, lease = claimed
        clear_context()
    bind_case({"case": case_id, "vendor": case.vendor, "order": case.original_order_id})
    for _ in range(max_steps):
        step = case.next_step
        if step is not None and case.next_attempt_at is not None and case.next_attempt_at > services.clock():
            _release(services, case_id)  # woken early (a duplicate, a grace period): the relay wakes it when due
            return "not_due"
        if step is None or step.is_email:
            _release(services, case_id)
            _safe_wake(services, case_id, step)
            return case.state.value
        try:
            case, held = _commit_outcome(services, case, step, _perform(services, case, step), lease)
        except Exception as exc:
            transient = is_transient(exc)
            _failed(services, case, step, str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}",
                    transient=transient, lease=lease)
            return "retry_scheduled" if transient else "needs_person"
        if held is None:
            _safe_wake(services, case_id, case.next_step if case.is_due(services.clock()) else None)
            return case.state.value
        lease = held
    _release(services, case_id)
    return "step_budget_used"


def _perform(services: Services, case: DunningCase, step: Step) -> Outcome:
    """Perform the step's one effect (see :data:`STEPS`, and :data:`LINK_STEPS` for a platform that makes
    payment links); return what records its outcome on the fresh case."""
    vendor = services.vendors.get(case.vendor)
    steps = LINK_STEPS if vendor is not None and vendor.platform in LINK_PLATFORMS else STEPS
    try:
        perform = steps.get(step) or STEPS[step]
    except KeyError:
        raise CaseError(f"no platform effect for step {step.value}") from None
    return perform(services, case)


def _plan_from_ipns(services: Services, case: DunningCase) -> Outcome:
    vendor = services.vendors.get(case.vendor)
    if vendor is None:
        raise StepFailed(f"vendor {case.vendor!r} is not in the vendors file")
    return plan_from_ipns(services, case, vendor)


def _create_replacement(services: Services, case: DunningCase) -> Outcome:
    order = services.platform.create_order(_new_order(case), idempotency_key=case.idempotency_key(
        Step.CREATE_REPLACEMENT))
    url = _checked_url(services, order.payment_url or "", services.settings.platform_url)
    return lambda c, now: c.replacement_created(order_id=order.id, payment_url=url, now=now)


def _cancel_original(services: Services, case: DunningCase) -> Outcome:
    try:
        services.platform.cancel_order(
            case.original_order_id, idempotency_key=case.idempotency_key(Step.CANCEL_ORIGINAL),
            reason=f"replaced by order {case.replacement_order_id} (dunning case {case.id})")
    except OrderCompleted:
        # Paid in full meanwhile: keep the original and withdraw the replacement instead.
        return lambda c, now: c.original_paid(installment=c.failed_installment, now=now)
    return lambda c, now: c.original_cancelled(now=now)


def _expire(services: Services, case: DunningCase) -> Outcome:
    if case.by_vendor:
        return lambda c, now: c.expired(now=now)  # nothing to cancel: the vendor is told to deactivate the link
    assert case.replacement_order_id is not None
    try:
        services.platform.cancel_order(case.replacement_order_id, idempotency_key=case.idempotency_key(Step.EXPIRE),
                                       reason=f"payment deadline passed (dunning case {case.id})")
    except OrderCompleted:
        raise StepFailed("the replacement was completed at its deadline: check the payment and close the "
                         "case by hand") from None
    return lambda c, now: c.expired(now=now)


def _fetch_original(services: Services, case: DunningCase) -> Outcome:
    """Read the original order for the case to plan from; the case decides whether it may go on."""
    return _plan_from_order(services, case, services.platform.get_order(case.original_order_id))


def _plan_from_order(services: Services, case: DunningCase, order: Order) -> Outcome:
    vendor = services.vendors.get(case.vendor)
    if vendor is None:
        raise StepFailed(f"vendor {case.vendor!r} is not in the vendors file")
    if order.vendor != case.vendor:  # nothing more of another vendor's order is read
        log.warning("vendor_mismatch", order_vendor=order.vendor[:64], case_vendor=case.vendor)
        return lambda c, now: c.order_of_another_vendor(order_vendor=order.vendor, now=now)
    plan = InstallmentPlan.from_order(order.to_json())
    today = services.clock().astimezone(vendor.zone).date()
    buyer = Buyer(order.buyer.email, order.buyer.first_name, order.buyer.last_name, order.buyer.country_code,
                  order.buyer.id)
    undeliverable = _undeliverable(order, vendor)
    return lambda c, now: c.plan(plan, order_vendor=order.vendor, order_status=order.status, buyer=buyer,
                                 product_id=order.product_id, product_name=order.product_name, today=today, now=now,
                                 undeliverable=undeliverable)


def _undeliverable(order: Order, vendor: Vendor) -> str | None:
    """What would keep the payment link from being emailed, found before anything is done on the platform: the
    buyer's address as the mail composer checks it, and the currency as the emails format it."""
    try:
        mailbox(f"{order.buyer.first_name} {order.buyer.last_name}", order.buyer.email)
        format_money(Money(0, order.currency), vendor.locale)
    except (ValueError, MailError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _new_order(case: DunningCase) -> NewOrder:
    """The replacement order, built only from what the case fixed when it planned: the same body every time."""
    assert case.replacement is not None and case.buyer is not None and case.currency is not None
    buyer = case.buyer
    return NewOrder(
        vendor=case.vendor, product_id=case.product_id or "", currency=case.currency,
        buyer=PlatformBuyer(id=buyer.id or "", email=buyer.email, first_name=buyer.first_name,
                            last_name=buyer.last_name, country_code=buyer.country_code or ""),
        plan=Plan.parse(case.replacement.to_json()), replaces=case.original_order_id,
        metadata={"dunlink_case": case.id, "failed_installment": str(case.failed_installment)})


def _withdraw_replacement(services: Services, case: DunningCase) -> Outcome:
    """Cancel the replacement because the original was paid or its plan cancelled.

    A cancel of the original whose answer was lost may have taken effect: when the original was paid, it is
    looked at first, and found cancelled the case goes to a person instead. A create whose answer was lost
    may have made the replacement: without an id, the create is sent again under its own key, which returns
    the order if it exists (the platform refusing it means there is none).
    """
    platform, key = services.platform, case.idempotency_key(Step.CANCEL_REPLACEMENT)
    if case.reason == WITHDRAW_ORIGINAL_PAID and platform.get_order(case.original_order_id).status == "cancelled":
        return lambda c, now: c.original_found_cancelled(now=now)
    order_id = case.replacement_order_id
    if order_id is None:
        if case.replacement is None:
            return lambda c, now: c.replacement_cancelled(now=now)
        try:
            order_id = platform.create_order(_new_order(case),
                                             idempotency_key=case.idempotency_key(Step.CREATE_REPLACEMENT)).id
        except Rejected:
            return lambda c, now: c.replacement_cancelled(now=now)
    try:
        platform.cancel_order(order_id, idempotency_key=key, reason=f"{case.reason} (dunning case {case.id})")
    except OrderCompleted:
        raise StepFailed("both the original and the replacement were paid: refund one of them") from None
    return lambda c, now: c.replacement_cancelled(now=now, order_id=order_id)


# A platform that makes payment links takes these steps where the order API's differ (the rest are the same).
LINK_PLATFORMS = frozenset({"digistore24"})
LINK_STEPS: dict[Step, Callable[[Services, DunningCase], Outcome]] = {
    Step.FETCH_ORIGINAL: lambda services, case: payment_links.fetch_original(services, case, _plan_from_order),
    Step.CREATE_REPLACEMENT: lambda services, case: payment_links.create_link(services, case, _checked_url),
    Step.CANCEL_ORIGINAL: payment_links.stop_original,
    Step.CANCEL_REPLACEMENT: payment_links.withdraw_link,
    Step.EXPIRE: payment_links.expire,
}
# What each step does: its one effect, and what records its outcome. Email steps are sent by send_email.
STEPS: dict[Step, Callable[[Services, DunningCase], Outcome]] = {
    Step.FETCH_ORIGINAL: _fetch_original,
    Step.PLAN_FROM_IPNS: _plan_from_ipns,
    Step.CREATE_REPLACEMENT: _create_replacement,
    Step.CANCEL_ORIGINAL: _cancel_original,
    Step.CANCEL_REPLACEMENT: _withdraw_replacement,
    Step.VENDOR_OVERDUE: lambda _services, _case: lambda c, now: c.vendor_overdue(now=now),
    Step.EXPIRE: _expire,
}


def _checked_url(services: Services, url: str, platform_url: str) -> str:
    """A link in a buyer's email must never point anywhere but the platform (at ``platform_url``)."""
    link, platform = urlsplit(url), urlsplit(platform_url)
    defaults = {"http": 80, "https": 443}
    try:
        port = link.port or defaults.get(link.scheme)
    except ValueError:
        port = -1
    own_host = (link.hostname or "") == (platform.hostname or "").lower()
    expected_port = (platform.port or defaults.get(platform.scheme)) if own_host else defaults.get(link.scheme)
    if (link.scheme not in ("http", "https") or (platform.scheme == "https" and link.scheme != "https")
            or "\\" in url or "@" in link.netloc or any(c.isspace() or ord(c) < 32 for c in url)
            or (link.hostname or "") not in services.settings.allowed_payment_hosts
            or port != expected_port):
        raise StepFailed(f"the platform answered a payment_url outside its own host: {url[:200]!r}")
    return url


def _claim(services: Services, case_id: str) -> tuple[DunningCase, datetime] | None:
    now = services.clock()
    until = now + services.lease
    with services.uow() as uow:
        case = uow.cases.claim_case(case_id, now=now, until=until)
        uow.commit()
    return (case, until) if case is not None else None


def _release(services: Services, case_id: str) -> None:
    with services.uow() as uow:
        uow.cases.release(case_id)
        uow.commit()


def _commit_outcome(services: Services, case: DunningCase, step: Step, apply: Outcome,
                    lease: datetime) -> tuple[DunningCase, datetime | None]:
    """Record the step's outcome; keep the lease when the next step is a platform step due now, so the
    same run goes on without another claim, else release it in the same statement.

    The case in hand is current while its lease is: the outcome is written only if the lease is still the
    one taken (one UPDATE). If it expired meanwhile, the case is read again and the outcome applied only if
    the case still waits for this step. Returns the case and the lease still held (None once released).
    """
    now = services.clock()
    outcome = case.snapshot()  # an outcome that raises leaves the case in hand as it was, to record the failure
    apply(outcome, now)
    case = outcome
    following = case.next_step
    holding = following is not None and not following.is_email and case.is_due(now)
    until = now + services.lease if holding else None
    with services.uow() as uow:
        if not uow.cases.save(case, lease_until=until, expect_lease=lease):
            case = _apply_to_fresh(uow, case.id, step, apply, now)
            until = None
        uow.commit()
    log.info("step_done", step=step.value, state=case.state.value)
    return case, until


def _apply_to_fresh(uow: UnitOfWork, case_id: str, step: Step, apply: Outcome, now: datetime, *,
                    key: str | None = None) -> DunningCase:
    """The lease ran out while the step's effect was performed: read the case as it is now, record the outcome
    only if it still waits for this step (and for email ``key``: the second reminder is the same step as the
    first), and release it. The effect is idempotent; a newer state wins.

    If another worker has taken the case since, it is left alone, lease and all: that worker is performing
    the same step under the same key and records the outcome itself. Releasing its lease would let a third
    one start the step again while it is still under way.
    """
    found = uow.cases.lock(case_id)
    assert found is not None
    fresh, lease_until = found
    if lease_until is not None and lease_until > now:
        log.warning("outcome_skipped", step=step.value, state=fresh.state.value, why="another worker holds the case")
        return fresh
    if fresh.next_step is step and (key is None or fresh.email_key(step) == key):
        apply(fresh, now)
    else:
        log.warning("outcome_skipped", step=step.value, state=fresh.state.value)
    uow.cases.save(fresh, lease_until=None)
    return fresh


def _failed(services: Services, case: DunningCase, step: Step, error: str, *, transient: bool,
            lease: datetime, key: str | None = None) -> None:
    """Record the failed step and release the case, as :func:`_commit_outcome` records a success: written only
    under the lease taken, else on the case as it is now if it still waits for this step (and email ``key``)."""
    now = services.clock()

    def fail(target: DunningCase, at: datetime) -> None:
        target.step_failed(step, error=error[:500], transient=transient, now=at, policy=services.retry_policy,
                           jitter=random.random())

    fail(case, now)
    with services.uow() as uow:
        if not uow.cases.save(case, lease_until=None, expect_lease=lease):
            case = _apply_to_fresh(uow, case.id, step, fail, now, key=key)
        uow.commit()
    log.warning("step_failed", step=step.value, error=error[:200], transient=transient, state=case.state.value)


# -- email --------------------------------------------------------------------------------------------------


def send_email(services: Services, case_id: str) -> str:
    """Send the case's due email (payment link, reminder or final notice) once: claimed in the ledger under
    (case, email key), in the same transaction that takes the case's lease, before it is sent; with the same
    Message-ID however often it is attempted."""
    now = services.clock()
    lease = now + services.lease
    problem: str | None = None
    transient = False
    with services.uow() as uow:
        case = uow.cases.claim_case(case_id, now=now, until=lease)
        if case is None:
            return "busy_or_gone"
        clear_context()
        bind_case({"case": case_id, "vendor": case.vendor, "order": case.original_order_id})
        step = case.next_step
        if step is None or not step.is_email or (case.next_attempt_at is not None and case.next_attempt_at > now):
            uow.cases.release(case_id)
            uow.commit()
            if step is not None and not step.is_email:
                _safe_wake(services, case_id, step)
            return case.state.value
        key = case.email_key(step)
        vendor = services.vendors.get(case.vendor)
        message = None
        if vendor is None:
            problem = f"StepFailed: vendor {case.vendor!r} is not in the vendors file"
        else:
            try:
                message = vendor_message(services, case, vendor, step) if step.to_vendor else \
                    _case_message(services, case, vendor, step)
            except Exception as exc:  # e.g. an address the mail system refuses outright (permanent)
                problem = f"{type(exc).__name__}: cannot build the {key} email: {exc}"
                transient = is_transient(exc)
        if message is not None:
            uow.emails.record_attempt(case_id=case_id, step=key, message_id=str(message["Message-ID"]),
                                      recipient=str(message["To"]), now=now)
        uow.commit()
    if message is None:
        _failed(services, case, step, problem or "StepFailed", transient=transient, lease=lease, key=key)
        return "retry_scheduled" if transient else "needs_person"
    try:
        services.mail.send(message)
    except Exception as exc:
        transient = is_transient(exc)
        _failed(services, case, step, f"{type(exc).__name__}: {exc}", transient=transient, lease=lease, key=key)
        return "retry_scheduled" if transient else "needs_person"
    now = services.clock()
    with services.uow() as uow:
        uow.emails.mark_sent(case_id, key, now=now)
        _EMAIL_DONE[step](case, now)
        if not uow.cases.save(case, lease_until=None, expect_lease=lease):
            _apply_to_fresh(uow, case_id, step, _EMAIL_DONE[step], now, key=key)
        uow.commit()
    log.info("email_sent", email=key)
    return f"{key}_sent"


send_link = send_email

_EMAIL_DONE = {
    Step.SEND_LINK: lambda c, now: c.link_sent(now=now),
    Step.SEND_REMINDER: lambda c, now: c.reminder_sent(now=now),
    Step.SEND_FINAL_NOTICE: lambda c, now: c.final_notice_done(now=now),
    Step.SEND_VENDOR_TASK: lambda c, now: c.vendor_task_sent(now=now),
    Step.SEND_VENDOR_REMINDER: lambda c, now: c.vendor_reminder_sent(now=now),
    Step.SEND_DEACTIVATE_LINK: lambda c, now: c.link_to_deactivate_told(now=now),
}


def _case_message(services: Services, case: DunningCase, vendor: Vendor, step: Step) -> EmailMessage:
    assert case.replacement is not None and case.buyer is not None and case.payment_url is not None
    plan = case.replacement
    fields: dict[str, Any] = dict(
        case_id=case.id, locale=vendor.locale, vendor_name=vendor.name, buyer_first_name=case.buyer.first_name,
        buyer_last_name=case.buyer.last_name, product_name=case.product_name or "", outstanding=plan.outstanding,
        installments_left=len(plan.installments),
        schedule=tuple(ScheduleLine(i.number, i.amount, i.due_date) for i in plan.installments),
        payment_url=case.payment_url, reply_to=vendor.reply_to, accent_colour=vendor.accent_colour,
        logo_url=vendor.logo_url, order_id=case.original_order_id, new_order_id=case.replacement_order_id,
        imprint=vendor.imprint, support_url=vendor.support_url)
    renderer = services.renderer
    if step is Step.SEND_LINK:
        rendered = renderer.payment_link(PaymentLinkContext(**fields))
    else:
        expires_at = case.expires_at or services.clock()
        expires_on = expires_at.astimezone(vendor.zone).date()
        if step is Step.SEND_REMINDER:
            rendered = renderer.reminder(ReminderContext(**fields, reminder_number=case.reminders_sent + 1,
                                                         expires_on=expires_on))
        else:
            rendered = renderer.final_notice(FinalNoticeContext(**fields, expires_on=expires_on))
    return compose(rendered=rendered, case_id=case.id, step=case.email_key(step), to_address=case.buyer.email,
                   to_name=f"{case.buyer.first_name} {case.buyer.last_name}".strip(),
                   from_address=services.settings.mail_from, from_name=vendor.name, reply_to=vendor.reply_to,
                   sent_at=services.clock())


# -- the relay ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayReport:
    events: int
    cases: int


def relay(services: Services) -> RelayReport:
    """Find stored work that no message may be carrying and publish it again.

    A crash between commit and publish, a Redis restart or a lost message all leave the work in the
    database; this is what makes Redis a carrier of wake-ups only. Re-published work is stamped so it is
    not published again while it waits in the queue.
    """
    now = services.clock()
    settle = now - services.relay_settle
    with services.uow() as uow:
        event_ids = uow.inbox.take_for_relay(received_before=settle, now=now, limit=RELAY_BATCH)
        due = uow.cases.take_due(now=now, settle=settle, limit=RELAY_BATCH)
        uow.commit()
    for event_id in event_ids:
        publish(services, Work.PROCESS_EVENT, [event_id])
    for case_id in due:
        # advance_case hands an email step on to the email queue itself.
        publish(services, Work.ADVANCE_CASE, [case_id])
    if event_ids or due:
        log.info("relay_enqueued", events=len(event_ids), cases=len(due))
    return RelayReport(len(event_ids), len(due))
