"""Repositories and the unit of work on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, inspect, select

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.repositories import DuplicateOpenCase
from adapters.db.tables import CaseEventRow, EmailRow, InboxEvent
from adapters.db.uow import SqlUnitOfWork
from domain.case import Buyer, CaseState, DunningCase, RetryPolicy, Step
from domain.money import Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from domain.policy import ReplacementKind

NOW = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


def _case(case_id: str = "c1", order_id: str = "CC-1001") -> DunningCase:
    return DunningCase.open(case_id=case_id, vendor="acme", original_order_id=order_id, failed_installment=3,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=NOW)


def _plan() -> InstallmentPlan:
    statuses = [InstallmentStatus.PAID] * 2 + [InstallmentStatus.FAILED] + [InstallmentStatus.OPEN] * 3
    return InstallmentPlan("EUR", Frequency.MONTHLY, tuple(
        Installment(n, Money(5000, "EUR"), date(2026, 1 + n, 1), status)
        for n, status in enumerate(statuses, start=1)))


def test_an_event_is_stored_once_per_deduplication_key(uow: SqlUnitOfWork) -> None:
    with uow:
        first = uow.inbox.add(vendor="acme", event_type="payment.failed", dedup_key="T-1", order_id="CC-1",
                              body="{}", now=NOW)
        again = uow.inbox.add(vendor="acme", event_type="payment.failed", dedup_key="T-1", order_id="CC-1",
                              body="{}", now=NOW)
        other_type = uow.inbox.add(vendor="acme", event_type="payment.made", dedup_key="T-1", order_id="CC-1",
                                   body="{}", now=NOW)
        uow.commit()
    with uow:
        count = uow.session.scalar(select(func.count()).select_from(InboxEvent))
    assert (first.created, again.created, other_type.created) == (True, False, True)
    assert again.id == first.id
    assert count == 2


def test_pending_events_are_those_not_processed(uow: SqlUnitOfWork) -> None:
    with uow:
        ids = [uow.inbox.add(vendor="acme", event_type="payment.failed", dedup_key=f"T-{n}", order_id="CC-1",
                             body="{}", now=NOW + timedelta(seconds=n)).id for n in range(3)]
        uow.inbox.mark_processed(ids[1], outcome="ignored", case_id=None, now=NOW)
        uow.commit()
    with uow:
        assert uow.inbox.pending(received_before=NOW + timedelta(minutes=1), limit=10) == [ids[0], ids[2]]
        assert uow.inbox.pending(received_before=NOW, limit=10) == [ids[0]]


def test_a_case_round_trips_with_its_plan_buyer_and_timeline(uow: SqlUnitOfWork) -> None:
    case = _case()
    with uow:
        uow.cases.add(case)
        uow.commit()
    with uow:
        loaded = uow.cases.get("c1")
        assert loaded is not None
        loaded.plan(_plan(), order_vendor="acme",
                    order_status="active", buyer=Buyer("anna@example.com", "Anna", "Meier", "DE", "b-7"),
                    product_id="p-42", product_name="Coaching Program", today=date(2026, 10, 1), now=NOW)
        loaded.replacement_created(order_id="R-1", payment_url="http://127.0.0.1:8090/pay/R-1", now=NOW)
        uow.cases.save(loaded)
        uow.commit()
    with uow:
        again = uow.cases.get("c1")
        timeline = uow.cases.timeline("c1")
    assert again is not None
    assert again.state is CaseState.REPLACEMENT_CREATED
    assert again.outstanding == Money(20000, "EUR")
    assert again.replacement is not None and again.replacement.outstanding == Money(20000, "EUR")
    assert again.buyer == Buyer("anna@example.com", "Anna", "Meier", "DE", "b-7")
    assert again.opened_at == NOW and again.opened_at.tzinfo is not None
    assert [event.kind for event in timeline] == ["opened", "planned", "replacement_created"]
    assert timeline[2].detail == {"order": "R-1"}


def test_the_unit_of_work_rolls_back_unless_committed(uow: SqlUnitOfWork) -> None:
    with uow:
        uow.cases.add(_case())
    with uow:
        assert uow.cases.get("c1") is None


def test_one_open_case_per_original_order(uow: SqlUnitOfWork) -> None:
    with uow:
        uow.cases.add(_case("c1"))
        uow.commit()
    with uow, pytest.raises(DuplicateOpenCase):
        uow.cases.add(_case("c2"))
    with uow:
        first = uow.cases.get("c1")
        assert first is not None
        first.resolve(note="handled by support", now=NOW)
        uow.cases.save(first)
        uow.commit()
    with uow:
        uow.cases.add(_case("c2"))
        uow.commit()
    with uow:
        open_case = uow.cases.open_for_order("acme", "CC-1001")
    assert open_case is not None and open_case.id == "c2"


def test_the_email_ledger_keeps_one_row_per_case_and_step(uow: SqlUnitOfWork) -> None:
    with uow:
        uow.cases.add(_case())
        first = uow.emails.claim(case_id="c1", step="send_link", message_id="<a@x>", recipient="a@x", now=NOW)
        again = uow.emails.claim(case_id="c1", step="send_link", message_id="<b@x>", recipient="a@x", now=NOW)
        assert first.id == again.id
        uow.commit()
    with uow:
        rows = [(row.step, row.message_id) for row in uow.session.scalars(select(EmailRow))]
    assert rows == [("send_link", "<a@x>")]


def test_an_email_sent_twice_keeps_the_time_it_was_first_sent(uow: SqlUnitOfWork) -> None:
    with uow:
        uow.cases.add(_case())
        uow.emails.record_attempt(case_id="c1", step="send_link", message_id="<a@x>", recipient="a@x", now=NOW)
        uow.emails.mark_sent("c1", "send_link", now=NOW + timedelta(seconds=5))
        uow.commit()
    with uow:  # a second worker whose lease ran out mid-send sent the same message again
        uow.emails.record_attempt(case_id="c1", step="send_link", message_id="<b@x>", recipient="a@x", now=NOW)
        uow.emails.mark_sent("c1", "send_link", now=NOW + timedelta(minutes=3))
        uow.commit()
    with uow:
        row = uow.emails.get("c1", "send_link")
        assert row is not None
        assert (row.status, row.message_id, row.attempts, row.sent_at) == (
            "sent", "<a@x>", 2, NOW + timedelta(seconds=5))


def test_a_lease_lets_one_worker_at_a_time_hold_a_case(uow: SqlUnitOfWork) -> None:
    with uow:
        uow.cases.add(_case())
        uow.commit()
    with uow:
        assert uow.cases.claim("c1", now=NOW, until=NOW + timedelta(seconds=30))
        uow.commit()
    with uow:
        assert not uow.cases.claim("c1", now=NOW + timedelta(seconds=10), until=NOW + timedelta(seconds=40))
        assert uow.cases.due(now=NOW + timedelta(seconds=10), limit=10) == []
        assert uow.cases.claim("c1", now=NOW + timedelta(seconds=31), until=NOW + timedelta(seconds=60))
        uow.cases.release("c1")
        uow.commit()
    with uow:
        assert uow.cases.due(now=NOW, limit=10) == [("c1", "open")]


def test_due_cases_follow_their_retry_time(uow: SqlUnitOfWork) -> None:
    case = _case()
    case.step_failed(Step.FETCH_ORIGINAL, error="503", transient=True, now=NOW, policy=RetryPolicy(), jitter=0.0)
    with uow:
        uow.cases.add(case)
        uow.commit()
    with uow:
        assert uow.cases.due(now=NOW, limit=10) == []
        assert uow.cases.due(now=NOW + timedelta(seconds=2), limit=10) == [("c1", "open")]
        events = uow.session.scalars(select(CaseEventRow.kind).order_by(CaseEventRow.id)).all()
    assert events == ["opened", "step_retry"]


@pytest.mark.postgres
def test_two_concurrent_transactions_opening_a_case_for_one_order(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    factory = make_session_factory(engine)
    barrier = threading.Barrier(2, timeout=10)
    outcomes: dict[str, str] = {}

    def open_case(case_id: str, hold: float) -> None:
        uow = SqlUnitOfWork(factory)
        with uow:
            barrier.wait()
            try:
                uow.cases.add(_case(case_id))
            except DuplicateOpenCase:
                outcomes[case_id] = "duplicate"
                return
            if hold:
                threading.Event().wait(hold)
            uow.commit()
            outcomes[case_id] = "opened"

    threads = [threading.Thread(target=open_case, args=("c1", 0.3)), threading.Thread(target=open_case, args=("c2", 0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    with SqlUnitOfWork(factory) as uow:
        stored = uow.cases.search()
    engine.dispose()
    assert sorted(outcomes.values()) == ["duplicate", "opened"]
    assert len(stored) == 1 and outcomes[stored[0].id] == "opened"


def test_a_fresh_database_and_an_upgraded_one_have_the_same_schema(database_url: str, tmp_path: object) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from adapters.db.tables import Base

    engine = make_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                       Base.metadata)
        inspector = inspect(connection)
        indexes = {ix["name"] for ix in inspector.get_indexes("cases")}
    engine.dispose()
    assert differences == []
    assert {"uq_cases_open_order", "ix_cases_due"} <= indexes
