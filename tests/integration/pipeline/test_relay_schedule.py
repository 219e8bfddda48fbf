"""When the relay publishes a case again: not while its last wake-up may still be queued, but as soon as the
case became due after that wake-up (a retry's backoff ran out, a worker died after moving it on)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.db.repositories import REQUEUE_AFTER
from adapters.db.uow import SqlUnitOfWork
from domain.case import DunningCase, RetryPolicy, Step
from domain.policy import ReplacementKind

OPENED = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
SETTLE = timedelta(seconds=5)


def _take_due(uow: SqlUnitOfWork, now: datetime) -> list[str]:
    with uow:
        taken = uow.cases.take_due(now=now, settle=now - SETTLE, limit=10)
        uow.commit()
    return [str(case_id) for case_id in taken]


def _opened(uow: SqlUnitOfWork) -> None:
    with uow:
        uow.cases.add(DunningCase.open(case_id="c1", vendor="acme", original_order_id="CC-1", failed_installment=3,
                                       replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=OPENED))
        uow.commit()


def test_a_retry_is_published_when_its_backoff_ends_not_a_requeue_interval_later(uow: SqlUnitOfWork) -> None:
    _opened(uow)
    # The new case's wake-up was published on commit: not again while it may still wait in the queue.
    assert _take_due(uow, OPENED + SETTLE + timedelta(seconds=1)) == []

    failed_at = OPENED + timedelta(seconds=1)
    with uow:
        case = uow.cases.get("c1")
        assert case is not None
        case.step_failed(Step.FETCH_ORIGINAL, error="PlatformUnavailable: 503", transient=True, now=failed_at,
                         policy=RetryPolicy(), jitter=0.0)
        uow.cases.save(case)
        uow.commit()
    assert case.next_attempt_at == failed_at + timedelta(seconds=1)

    due = case.next_attempt_at + SETTLE
    assert due < OPENED + REQUEUE_AFTER
    assert _take_due(uow, due - timedelta(seconds=1)) == []
    assert _take_due(uow, due) == ["c1"]
    # Published now: not again until that wake-up had time to be taken.
    assert _take_due(uow, due + timedelta(seconds=2)) == []
    assert _take_due(uow, due + REQUEUE_AFTER) == ["c1"]


def test_a_case_a_dead_worker_moved_on_is_published_once_its_lease_ends(uow: SqlUnitOfWork) -> None:
    _opened(uow)
    moved_at = OPENED + timedelta(seconds=1)
    lease = timedelta(seconds=8)
    with uow:
        assert uow.cases.claim("c1", now=moved_at, until=moved_at + lease)
        case = uow.cases.get("c1")
        assert case is not None
        case.note("moved", now=moved_at)
        case.next_attempt_at = moved_at  # as a step's outcome leaves it: due for the next step at once
        uow.cases.save(case)
        uow.commit()

    assert _take_due(uow, moved_at + lease - timedelta(seconds=1)) == []  # still held by the worker
    assert _take_due(uow, moved_at + lease) == ["c1"]
