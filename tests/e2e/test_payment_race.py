"""The buyer pays after all: on the original before or after it was cancelled, or on the replacement."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapters.db.repositories import CaseRepository
from adapters.db.tables import CaseRow
from adapters.email.port import TransientMailError
from adapters.platform.errors import TransientPlatformError
from adapters.platform.port import NewOrder, Order, PlatformPort
from domain.case import DunningCase
from dunlink.runtime.bootstrap import Services, utcnow
from dunlink.usecases.pipeline import advance_case, handle_event, send_email
from tests.support.stack import Stack, eventually, order_json, running_stack


class PlatformBetween:
    """The order API as the pipeline sees it, with a test's behaviour put in front of a call: a port swapped in
    through the services, so the race tests patch nothing of the pipeline's own."""

    def __init__(self, platform: PlatformPort) -> None:
        self.platform = platform

    def get_order(self, order_id: str) -> Order:
        return self.platform.get_order(order_id)

    def create_order(self, order: NewOrder, *, idempotency_key: str) -> Order:
        return self.platform.create_order(order, idempotency_key=idempotency_key)

    def cancel_order(self, order_id: str, *, idempotency_key: str, reason: str) -> Order:
        return self.platform.cancel_order(order_id, idempotency_key=idempotency_key, reason=reason)


@pytest.fixture
def stack_without_workers(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    # No beat either: nothing may take the case forward except what the test runs.
    with running_stack(tmp_path, database_url, workers=0, beat=False) as running:
        yield running


def test_payments_on_the_original_and_on_the_replacement(stack_without_workers: Stack) -> None:
    stack = stack_without_workers

    # (a) Paid on the original after the replacement exists and before the original is cancelled.
    stack.seed(order_json("CC-4001"))
    assert stack.fail("CC-4001", 3)["delivery"]["status"] == 200
    [event] = stack.inbox()
    with stack.services() as (services, _):
        opened = handle_event(services, event.id)
        assert opened.case_id is not None
        advance_case(services, opened.case_id, max_steps=2)  # fetch the original, create the replacement
    assert stack.case_in("CC-4001", "replacement_created") is not None
    [replacement] = stack.replacements("CC-4001")

    assert stack.pay("CC-4001", 3)["delivery"]["status"] == 200
    stack.start_worker()
    resolved = eventually(lambda: stack.case_in("CC-4001", "resolved"), what="the case to resolve")
    assert stack.order(replacement["id"])["status"] == "cancelled"
    assert stack.order("CC-4001")["status"] == "active"
    cancels = [(r["path"], r.get("effect")) for r in stack.requests() if r["path"].endswith("/cancel")]
    assert cancels == [(f"/v1/orders/{replacement['id']}/cancel", "cancelled")]
    assert resolved.replacement_order_id == replacement["id"]
    assert stack.mail.messages == []

    # (b) Paid on the original after it was cancelled: a person refunds or reconciles.
    stack.seed(order_json("CC-4002", email="b@example.com"))
    stack.fail("CC-4002", 3)
    eventually(lambda: stack.case_in("CC-4002", "awaiting_payment"), what="the link for CC-4002")
    assert stack.pay("CC-4002", 3)["delivery"]["status"] == 200
    person = eventually(lambda: stack.case_in("CC-4002", "needs_person"), what="CC-4002 to need a person")
    assert person.reason == "paid on a cancelled order: refund or reconcile"

    # Paid on the replacement: recovered, with the amount.
    stack.seed(order_json("CC-4003", email="c@example.com"))
    stack.fail("CC-4003", 3)
    waiting = eventually(lambda: stack.case_in("CC-4003", "awaiting_payment"), what="the link for CC-4003")
    assert waiting.replacement_order_id is not None
    assert stack.pay(waiting.replacement_order_id, 1)["delivery"]["status"] == 200
    recovered = eventually(lambda: stack.case_in("CC-4003", "recovered"), what="CC-4003 to be recovered")
    assert recovered.recovered_minor == 5000

    assert [m.rcpt_tos for m in stack.mail.messages] == [("b@example.com",), ("c@example.com",)]
    assert stack.order("CC-4002")["status"] == "cancelled"
    assert stack.order("CC-4003")["status"] == "cancelled"


def _opened(stack: Stack, services: Services, order_id: str, **buyer: Any) -> tuple[str, int]:
    """Seed ``order_id``, fail its installment 3 and open the case here: (the case's id, the failure's event id)."""
    stack.seed(order_json(order_id, **buyer))
    stack.fail(order_id, 3)
    [failed] = stack.inbox()
    opened = handle_event(services, failed.id)
    assert opened.case_id is not None
    return opened.case_id, failed.id


def test_a_payment_on_the_original_acts_on_the_step_a_worker_committed_after_the_case_was_found(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook's worker finds the case, then another worker creates the replacement and lets the case go
    before the payment takes the lease: the payment must see that replacement and withdraw it."""
    with running_stack(tmp_path, postgres_url, workers=0, beat=False) as stack:
        with stack.services() as (services, _):
            case_id, failed = _opened(stack, services, "CC-4101")
            advance_case(services, case_id, max_steps=1)  # the original fetched: the installment is open
            assert stack.pay("CC-4101", 3)["delivery"]["status"] == 200
            [paid] = [event for event in stack.inbox() if event.id != failed]

            found = CaseRepository.open_for_order
            raced: list[str] = []

            def found_then_a_worker_moves_on(self: CaseRepository, vendor: str, order_id: str) -> DunningCase | None:
                case = found(self, vendor, order_id)
                if case is not None and not raced:
                    raced.append(case.state.value)  # another worker, in transactions of its own
                    advance_case(services, case.id, max_steps=1)  # creates the replacement
                return case

            monkeypatch.setattr(CaseRepository, "open_for_order", found_then_a_worker_moves_on)
            outcome = handle_event(services, paid.id)
            monkeypatch.undo()
            assert raced == ["planned"]
            assert outcome.outcome == "original_paid:cancelling_replacement"
            # Acted on as found, the payment's write would have put back the case as it was before the
            # replacement existed, and the withdrawal would have had to create it again to learn its id.
            [replacement] = stack.replacements("CC-4101")
            withdrawing = stack.case_in("CC-4101", "cancelling_replacement")
            assert withdrawing is not None and withdrawing.replacement_order_id == replacement["id"]
            advance_case(services, case_id)  # the woken worker's turn

        creates = [r for r in stack.requests() if r["method"] == "POST" and r["path"] == "/v1/orders"]
        assert len(creates) == 1
        resolved = stack.case_in("CC-4101", "resolved")
        assert resolved is not None
        assert resolved.replacement_order_id == replacement["id"]
        assert stack.order(replacement["id"])["status"] == "cancelled"
        assert stack.order("CC-4101")["status"] == "active"
        assert stack.mail.messages == []


def test_one_payment_handled_by_two_workers_at_once_is_applied_once(
        postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay re-publishes an event a slow worker is still on (or `dunlink due` runs it): the second
    handler waits for the first and finds the payment applied, instead of applying it to the closed case."""
    with running_stack(tmp_path, postgres_url, workers=0, beat=False) as stack:
        with stack.services() as (services, _):
            case_id, failed = _opened(stack, services, "CC-4201", email="d@example.com")
            advance_case(services, case_id)
            assert send_email(services, case_id) == "send_link_sent"
            waiting = stack.case_in("CC-4201", "awaiting_payment")
            assert waiting is not None and waiting.replacement_order_id is not None
            assert stack.pay(waiting.replacement_order_id, 1)["delivery"]["status"] == 200
            [paid] = [event for event in stack.inbox() if event.id != failed]

            look_up = CaseRepository.by_replacement
            first_inside, go_on = threading.Event(), threading.Event()

            def first_handler_is_slow(self: CaseRepository, vendor: str, order_id: str) -> DunningCase | None:
                # The first handler holds the event's row while it looks the case up, and takes its time.
                if threading.current_thread().name == "first":
                    first_inside.set()
                    assert go_on.wait(30)
                return look_up(self, vendor, order_id)

            monkeypatch.setattr(CaseRepository, "by_replacement", first_handler_is_slow)
            outcomes: dict[str, str] = {}

            def handle(name: str) -> None:
                outcomes[name] = handle_event(services, paid.id).outcome

            first = threading.Thread(target=handle, args=("first",), name="first")
            first.start()
            assert first_inside.wait(30)
            second = threading.Thread(target=handle, args=("second",), name="second")
            second.start()
            second.join(2)  # waits for the first handler's transaction (before: went ahead on its own)
            go_on.set()
            first.join(30)
            second.join(30)

        assert outcomes == {"first": "recovered", "second": "already_processed"}
        recovered = stack.case_in("CC-4201", "recovered")
        assert recovered is not None and recovered.recovered_minor == 5000
        assert recovered.reason is None


def test_a_failure_reported_after_the_lease_ran_out_leaves_the_step_another_worker_did(
        database_url: str, tmp_path: Path) -> None:
    """A worker's platform call outlives its lease; another worker takes the case and does the step; then the
    first call fails. The failure is about a step the case no longer waits for: it is not recorded."""
    with running_stack(tmp_path, database_url, workers=0, beat=False) as stack:
        with stack.services() as (services, _):
            case_id, _ = _opened(stack, services, "CC-4301")
            later = dataclasses.replace(services, clock=lambda: utcnow() + services.lease + timedelta(seconds=1))

            class OutlivesItsLease(PlatformBetween):
                def get_order(self, order_id: str) -> Order:
                    advance_case(later, case_id, max_steps=1)  # the other worker fetches the original
                    raise TransientPlatformError("read timed out")

            slow = dataclasses.replace(services, platform=OutlivesItsLease(services.platform))
            assert advance_case(slow, case_id, max_steps=1) == "retry_scheduled"

        planned = stack.case_in("CC-4301", "planned")
        assert planned is not None, "the failure undid the other worker's step"
        assert planned.attempts == 0 and planned.failed_step is None


def test_a_reminder_failure_reported_after_another_worker_sent_it_leaves_the_next_reminder_on_its_day(
        database_url: str, tmp_path: Path) -> None:
    """A send of the first reminder outlives its lease; another worker sends that reminder; then the first
    send fails. The case waits for the second reminder by then: its day stays, no early retry is scheduled."""
    with running_stack(tmp_path, database_url, workers=0, beat=False) as stack:
        with stack.services() as (services, _):
            case_id, _ = _opened(stack, services, "CC-4401", email="e@example.com")
            advance_case(services, case_id)
            assert send_email(services, case_id).endswith("_sent")  # the payment link
            linked = stack.case_in("CC-4401", "awaiting_payment")
            assert linked is not None and linked.next_attempt_at is not None
            at = linked.next_attempt_at + timedelta(minutes=1)  # the first reminder is due
            other = dataclasses.replace(services, clock=lambda: at + services.lease + timedelta(seconds=1))
            left_by_other: list[Any] = []

            class OutlivesItsLease:
                def send(self, message: Any) -> None:
                    assert send_email(other, case_id).endswith("_sent")  # the other worker sends the reminder
                    after_other = stack.case_in("CC-4401", "awaiting_payment")
                    assert after_other is not None and after_other.reminders_sent == 1
                    left_by_other.append(after_other.next_attempt_at)
                    raise TransientMailError("connection reset by peer")

            slow = dataclasses.replace(services, clock=lambda: at, mail=OutlivesItsLease())
            assert send_email(slow, case_id) == "retry_scheduled"

        waiting = stack.case_in("CC-4401", "awaiting_payment")
        assert waiting is not None
        assert (waiting.reminders_sent, waiting.attempts, waiting.failed_step) == (1, 0, None)
        assert waiting.next_attempt_at == left_by_other[0] > at + timedelta(days=1)
        assert len(stack.mails_to("e@example.com")) == 2  # the link and one reminder


def test_an_outcome_after_the_lease_ran_out_leaves_a_case_another_worker_holds(
        database_url: str, tmp_path: Path) -> None:
    """A worker's platform call outlives its lease and another worker has taken the case for the same step:
    the late outcome is not written and the other worker's lease is not released (a third would start the
    step again while it is under way); the other worker records the outcome itself."""
    with running_stack(tmp_path, database_url, workers=0, beat=False) as stack:
        with stack.services() as (services, _):
            case_id, _ = _opened(stack, services, "CC-4501")
            later = utcnow() + services.lease + timedelta(seconds=1)

            class OutlivesItsLease(PlatformBetween):
                def get_order(self, order_id: str) -> Order:
                    with services.uow() as uow:  # the other worker takes the case and starts the same step
                        assert uow.cases.claim(case_id, now=later, until=later + services.lease)
                        uow.commit()
                    return self.platform.get_order(order_id)

            advance_case(dataclasses.replace(services, platform=OutlivesItsLease(services.platform)), case_id,
                         max_steps=1)
            with services.engine.connect() as connection:
                held = connection.execute(select(CaseRow.lease_until).where(CaseRow.id == case_id)).scalar_one()

        assert stack.case_in("CC-4501", "open") is not None, "the late outcome was written under another's lease"
        assert held == later + services.lease
