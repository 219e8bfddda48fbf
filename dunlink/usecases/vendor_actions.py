"""What a vendor who makes replacements by hand tells dunlink, from the vendor page or the CLI alike.

Each action takes the case's lease as a worker does (a step in flight is never overwritten), records what the
vendor did on the case, commits, and wakes the case if that made a step due: the buyer's email once the link
is recorded and the original known cancelled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import structlog

from domain.case import CaseError, DunningCase, LinkAlreadySent
from domain.links import RefusedLink, refused_link
from dunlink.usecases.pipeline import handle_event, wake
from dunlink.usecases.ports import Services

log = structlog.get_logger("dunlink.vendor")

# A worker holds a case for the few seconds of one step: wait that long for it rather than fail the vendor.
WAIT_FOR_LEASE_S = 5.0
_POLL_S = 0.1


class Answer(StrEnum):
    RECORDED = "recorded"
    UNCHANGED = "unchanged"
    REFUSED = "refused"  # a link that may not be sent to a buyer (the page answers 400)
    CONFLICT = "conflict"  # another link after the buyer was emailed, or a case that is over (409)
    NOT_FOUND = "not_found"
    BUSY = "busy"  # a worker held the case longer than WAIT_FOR_LEASE_S (503: try again)


@dataclass(frozen=True, slots=True)
class ActionResult:
    answer: Answer
    case: DunningCase | None = None
    refused: RefusedLink | None = None
    message: str = ""


def give_link(services: Services, case_id: str, payment_url: str, *, order_id: str | None = None) -> ActionResult:
    """Record the payment link the vendor made (and the new order's id, if given)."""
    payment_url, order_id = payment_url.strip(), (order_id or "").strip() or None
    case = _read(services, case_id)
    if case is None:
        return ActionResult(Answer.NOT_FOUND)
    vendor = services.vendors.get(case.vendor)
    hosts = vendor.payment_hosts if vendor is not None else ()
    if (refused := refused_link(payment_url, hosts)) is not None:
        return ActionResult(Answer.REFUSED, case, refused)
    if order_id is not None and (len(order_id) > 128 or not order_id.isprintable()):
        return ActionResult(Answer.REFUSED, case, message="the order id must be printable text of at most 128 "
                                                          "characters")
    result = _act(services, case_id,
                  lambda c, now: c.link_given(payment_url=payment_url, order_id=order_id, now=now))
    if result.answer is Answer.RECORDED and result.case is not None and result.case.replacement_order_id:
        replay_unmatched_payments(services, result.case.vendor, result.case.replacement_order_id)
    return result


def replay_unmatched_payments(services: Services, vendor: str, order_id: str) -> int:
    """A payment on the vendor's order that arrived before the vendor named the order matched no case: apply it
    again now that the case names it (the buyer can pay CopeCart's link before the vendor pastes it)."""
    with services.uow() as uow:
        event_ids = uow.inbox.reopen_unmatched_payments(vendor, order_id)
        uow.commit()
    for event_id in event_ids:
        # Applied here and now, so the page shows the case as it is; one that finds the case busy is left
        # pending, and the relay applies it shortly.
        handle_event(services, event_id)
    return len(event_ids)


def original_cancelled(services: Services, case_id: str, *, by: str) -> ActionResult:
    """Record the vendor's word that the original order is cancelled in CopeCart."""
    return _act(services, case_id, lambda c, now: c.original_cancel_known(now=now, by=by))


def cannot_generate(services: Services, case_id: str) -> ActionResult:
    """The phone offer cannot make the link: the case waits for a person."""
    def act(case: DunningCase, now: datetime) -> bool:
        already = case.cannot_generate
        case.cannot_generate_link(now=now)
        return not already

    return _act(services, case_id, act)


def confirm_paid(services: Services, case_id: str, installments: tuple[int, ...]) -> ActionResult:
    """A person checked in CopeCart that these earlier installments were paid: the case plans again."""
    def act(case: DunningCase, now: datetime) -> bool:
        case.confirm_paid(installments, now=now)
        return True

    return _act(services, case_id, act)


def _read(services: Services, case_id: str) -> DunningCase | None:
    with services.uow() as uow:
        case = uow.cases.get(case_id)
    return case if case is not None and case.by_vendor else None


def _act(services: Services, case_id: str, change: Callable[[DunningCase, datetime], bool]) -> ActionResult:
    """Apply ``change`` under the case's lease and commit; wake the case if a step fell due."""
    deadline = time.monotonic() + WAIT_FOR_LEASE_S
    while True:
        now = services.clock()
        with services.uow() as uow:
            case = uow.cases.claim_case(case_id, now=now, until=now + services.lease)
            if case is not None:
                if not case.by_vendor:
                    uow.cases.release(case_id)
                    uow.commit()
                    return ActionResult(Answer.NOT_FOUND)
                try:
                    changed = change(case, now)
                except LinkAlreadySent as exc:
                    uow.cases.release(case_id)
                    uow.commit()
                    return ActionResult(Answer.CONFLICT, case, message=str(exc))
                except CaseError as exc:
                    uow.cases.release(case_id)
                    uow.commit()
                    return ActionResult(Answer.CONFLICT, case, message=str(exc))
                uow.cases.save(case, lease_until=None)
                uow.commit()
                break
            exists = uow.cases.get(case_id) is not None
        if not exists:
            return ActionResult(Answer.NOT_FOUND)
        if time.monotonic() >= deadline:
            return ActionResult(Answer.BUSY, message="the case is being worked on: try again in a moment")
        time.sleep(_POLL_S)
    if changed and case.is_due(services.clock()):
        try:
            wake(services, case_id, case.next_step)
        except Exception:  # the relay wakes stored work whose message was not published
            log.warning("enqueue_failed", case=case_id)
    return ActionResult(Answer.RECORDED if changed else Answer.UNCHANGED, case)
