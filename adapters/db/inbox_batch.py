"""Storing many webhook events in one transaction: the webhook's group commit writes through here.

One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per batch: the database still settles races between
concurrent deliveries, and the cost of a round trip, a statement and a commit is shared by every request
of the batch. The rows returned say which events were created; everything else is a duplicate, either of
an earlier event in the same batch or of a stored one.

This runs on the engine's pooled driver connection itself, not a SQLAlchemy ``Connection``: the batch is a
single fixed statement, and SQLAlchemy's execution and result layers cost more CPU per batch than the
driver's whole round trip. The pool still hands out and recycles the connections (with the engine's
SQLite set-up), and a connection that failed a batch is discarded rather than returned.

PostgreSQL gets the rows as one array per column (``unnest``) in binary format: a statement of a fixed
shape that psycopg prepares once, and no text quoting of the bodies. SQLite gets a multi-row ``VALUES``
in a ``BEGIN IMMEDIATE`` transaction, as the engine begins every other write (see ``engine.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from adapters.db.repositories import StoredEvent
from adapters.db.tables import InboxEvent

_INSERT = "INSERT INTO inbox_events (vendor, event_type, dedup_key, order_id, body, received_at, enqueued_at) "
_CONFLICT = " ON CONFLICT (vendor, event_type, dedup_key) DO NOTHING RETURNING id, vendor, event_type, dedup_key"
_POSTGRESQL = (  # constant text; every value is bound
    _INSERT + "SELECT v, e, k, o, b, %(now)b, %(now)b FROM unnest(%(v)b::varchar[], %(e)b::varchar[], "  # noqa: S608
    "%(k)b::varchar[], %(o)b::varchar[], %(b)b::text[]) AS new(v, e, k, o, b)" + _CONFLICT)
_STORED_POSTGRESQL = (
    "SELECT id, vendor, event_type, dedup_key FROM inbox_events WHERE (vendor, event_type, dedup_key) IN "
    "(SELECT * FROM unnest(%(v)b::varchar[], %(e)b::varchar[], %(k)b::varchar[]))")
_STORED_SQLITE = "SELECT id, vendor, event_type, dedup_key FROM inbox_events WHERE (vendor, event_type, dedup_key) IN "
# SQLite counts bound values per statement (32,766 since 3.32; RETURNING needs 3.35 anyway).
SQLITE_ROWS_PER_STATEMENT = 500

Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class NewEvent:
    vendor: str
    event_type: str
    dedup_key: str
    order_id: str | None
    body: str

    @property
    def key(self) -> Key:
        return self.vendor, self.event_type, self.dedup_key


def store_batch(engine: Engine, events: Sequence[NewEvent], *, now: datetime,
                statement_timeout_ms: int | None = None) -> list[StoredEvent]:
    """Store each event once per deduplication key, in one committed transaction.

    Returns one :class:`StoredEvent` per given event, in order. ``created`` is true for exactly one event
    per key that was not stored before: the first of its key in ``events``. Later copies in the same batch,
    and events whose key was already stored, come back as duplicates carrying the stored id. Rows are
    stamped as published now (``enqueued_at``), as the webhook publishes their wake-ups right after the
    commit. On PostgreSQL, ``statement_timeout_ms`` bounds each statement of the connection (set once per
    connection). Raises the driver's error if anything fails; nothing of the batch is stored then.
    """
    first = _first_of_each_key(events)
    connection = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            created, found = _postgresql(connection, first, now, statement_timeout_ms)
        else:
            process = InboxEvent.__table__.c.received_at.type.bind_processor(engine.dialect)
            created, found = _sqlite(connection, first, process(now) if process else now)
    except BaseException:
        connection.invalidate()  # whatever state it is in, the next batch starts on a fresh connection
        raise
    finally:
        connection.close()
    return _results(events, created, found)


async def store_batch_async(connection: Any, events: Sequence[NewEvent], *, now: datetime) -> list[StoredEvent]:
    """:func:`store_batch` on a psycopg ``AsyncConnection`` (PostgreSQL), for a writer on the event loop.

    The caller owns the connection: on any error it should close it and use a fresh one for the next batch.
    """
    first = _first_of_each_key(events)
    async with connection.cursor() as cursor:
        await cursor.execute(_POSTGRESQL, _columns(first, now))
        created = _rows(await cursor.fetchall())
        missing = [e for e in first if e.key not in created]
        found: dict[Key, int] = {}
        if missing:
            await cursor.execute(_STORED_POSTGRESQL, _key_columns(missing))
            found = _rows(await cursor.fetchall())
    if not connection.autocommit:
        await connection.commit()
    return _results(events, created, found)


def _first_of_each_key(events: Sequence[NewEvent]) -> list[NewEvent]:
    """One event per key, in key order: concurrent batches then take the unique index's locks in the same
    order, so two batches holding copies of the same deliveries wait for each other instead of deadlocking."""
    first: dict[Key, NewEvent] = {}
    for event in events:
        first.setdefault(event.key, event)
    return [first[key] for key in sorted(first)]


def _columns(events: Sequence[NewEvent], now: datetime) -> dict[str, Any]:
    return {"now": now, **_key_columns(events), "o": [e.order_id for e in events], "b": [e.body for e in events]}


def _key_columns(events: Sequence[NewEvent]) -> dict[str, Any]:
    return {"v": [e.vendor for e in events], "e": [e.event_type for e in events], "k": [e.dedup_key for e in events]}


def _results(events: Sequence[NewEvent], created: dict[Key, int], found: dict[Key, int]) -> list[StoredEvent]:
    """One result per event, in order: the first copy of a key takes its created row, the rest are duplicates."""
    unclaimed = dict(created)
    result: list[StoredEvent] = []
    for event in events:
        key = event.key
        new_id = unclaimed.pop(key, None)
        if new_id is not None:
            result.append(StoredEvent(new_id, created=True))
            continue
        stored = created.get(key) or found.get(key)
        if stored is None:
            raise LookupError(f"event {key} was neither inserted nor found")
        result.append(StoredEvent(stored, created=False))
    return result


def _rows(rows: Sequence[Sequence[Any]]) -> dict[Key, int]:
    return {(vendor, event_type, key): int(row_id) for row_id, vendor, event_type, key in rows}


def _postgresql(connection: Any, events: list[NewEvent], now: datetime, statement_timeout_ms: int | None
                ) -> tuple[dict[Key, int], dict[Key, int]]:
    cursor = connection.cursor()
    try:
        if statement_timeout_ms is not None and connection.info.get("statement_timeout") != statement_timeout_ms:
            cursor.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
            connection.commit()
            connection.info["statement_timeout"] = statement_timeout_ms
        cursor.execute(_POSTGRESQL, _columns(events, now))
        created = _rows(cursor.fetchall())
        missing = [e for e in events if e.key not in created]
        found: dict[Key, int] = {}
        if missing:  # duplicates of stored events: CopeCart's retries, rare next to new events
            cursor.execute(_STORED_POSTGRESQL, _key_columns(missing))
            found = _rows(cursor.fetchall())
        connection.commit()
    finally:
        cursor.close()
    return created, found


def _sqlite(connection: Any, events: list[NewEvent], stamp: Any) -> tuple[dict[Key, int], dict[Key, int]]:
    cursor = connection.cursor()
    try:
        cursor.execute("BEGIN IMMEDIATE")  # the engine runs SQLite connections without implicit transactions
        created: dict[Key, int] = {}
        for start in range(0, len(events), SQLITE_ROWS_PER_STATEMENT):
            chunk = events[start:start + SQLITE_ROWS_PER_STATEMENT]
            params: list[Any] = []
            for e in chunk:
                params += (e.vendor, e.event_type, e.dedup_key, e.order_id, e.body, stamp, stamp)
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))  # placeholders only: values are bound
            cursor.execute(_INSERT + "VALUES " + values + _CONFLICT, params)
            created.update(_rows(cursor.fetchall()))
        found: dict[Key, int] = {}
        missing = [e for e in events if e.key not in created]
        for start in range(0, len(missing), SQLITE_ROWS_PER_STATEMENT):
            chunk = missing[start:start + SQLITE_ROWS_PER_STATEMENT]
            keys = ", ".join(["(?, ?, ?)"] * len(chunk))
            cursor.execute(_STORED_SQLITE + "(VALUES " + keys + ")", [part for e in chunk for part in e.key])
            found.update(_rows(cursor.fetchall()))
        cursor.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            cursor.execute("ROLLBACK")
        raise
    finally:
        cursor.close()
    return created, found
