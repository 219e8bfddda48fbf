"""Many webhook events stored in one statement, on SQLite and PostgreSQL: once per key, whatever the batch holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from adapters.db.inbox_batch import SQLITE_ROWS_PER_STATEMENT, NewEvent, store_batch
from adapters.db.repositories import StoredEvent
from adapters.db.tables import InboxEvent

NOW = datetime(2026, 10, 1, 8, 0, 0, 250_000, tzinfo=UTC)


def _event(key: str, *, vendor: str = "acme", event_type: str = "payment.failed", order: str | None = "CC-1",
           body: str = '{"a": 1}') -> NewEvent:
    return NewEvent(vendor, event_type, key, order, body)


def _store(engine: Engine, events: list[NewEvent]) -> list[StoredEvent]:
    return store_batch(engine, events, now=NOW, statement_timeout_ms=5000)


def _rows(engine: Engine) -> list[tuple[str, str, str, str | None, str, datetime, datetime | None]]:
    table = InboxEvent.__table__
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            select(table.c.vendor, table.c.event_type, table.c.dedup_key, table.c.order_id, table.c.body,
                   table.c.received_at, table.c.enqueued_at).order_by(table.c.id))]


def test_each_key_is_created_once_and_every_copy_learns_the_stored_id(engine: Engine) -> None:
    [earlier] = _store(engine, [_event("T-1")])
    assert earlier.created

    given = [
        _event("T-2"),
        _event("T-1"),                                   # stored by an earlier batch
        _event("T-2", body='{"again": true}'),           # a copy within this batch: the first copy wins
        _event("T-2", event_type="payment.made"),        # another event type: another event
        _event("T-2", vendor="globex"),                  # another vendor: another event
        _event("T-3", order=None),
        _event("T-2"),
    ]
    results = _store(engine, given)

    assert [r.created for r in results] == [True, False, False, True, True, True, False]
    assert results[1].id == earlier.id
    assert results[2].id == results[6].id == results[0].id
    assert len({results[i].id for i in (0, 1, 3, 4, 5)}) == 5
    rows = _rows(engine)
    # A batch's rows go in in key order, so concurrent batches take the unique index's locks in one order.
    assert [(vendor, event_type, key, order) for vendor, event_type, key, order, *_ in rows] == [
        ("acme", "payment.failed", "T-1", "CC-1"), ("acme", "payment.failed", "T-2", "CC-1"),
        ("acme", "payment.failed", "T-3", None), ("acme", "payment.made", "T-2", "CC-1"),
        ("globex", "payment.failed", "T-2", "CC-1")]
    assert rows[1][4] == '{"a": 1}'
    # Stamped as received and as published by the webhook, at the batch's time, in UTC on both backends.
    assert {(received, enqueued) for *_, received, enqueued in rows} == {(NOW, NOW)}


def test_bodies_are_stored_exactly_as_given(engine: Engine) -> None:
    bodies = ['{"name": "Zoë \\"Z\\" O\'Brien", "path": "C:\\\\x", "emoji": "💶"}', "{}" + " " * 70_000,
              '{"a":"{}[],"}']
    _store(engine, [_event(f"T-{n}", body=body) for n, body in enumerate(bodies)])
    assert [row[4] for row in _rows(engine)] == bodies


def test_a_batch_larger_than_one_sqlite_statement(engine: Engine) -> None:
    count = SQLITE_ROWS_PER_STATEMENT + 20
    results = _store(engine, [_event(f"T-{n}", order=f"CC-{n}") for n in range(count)] + [_event("T-0")])
    assert [r.created for r in results] == [True] * count + [False]
    assert results[-1].id == results[0].id
    assert len(_rows(engine)) == count


def test_a_failing_batch_stores_nothing_and_the_next_one_works(engine: Engine) -> None:
    broken = NewEvent("acme", "payment.failed", "T-2", "CC-2", None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"(?i)null"):
        _store(engine, [_event("T-1"), broken])
    assert _rows(engine) == []
    assert [r.created for r in _store(engine, [_event("T-1"), _event("T-2")])] == [True, True]
    assert [r.created for r in _store(engine, [_event("T-2"), _event("T-3")])] == [False, True]
