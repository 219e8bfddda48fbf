"""Storing many webhook events in one statement: the webhook's group commit writes through here.

One ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per batch, on a Core connection (no ORM session): the
database still settles races between concurrent deliveries, and the cost of a round trip, a statement
and a commit is shared by every request of the batch. The rows returned say which events were created;
everything else is a duplicate, either of an earlier event in the same batch or of a stored one.

PostgreSQL gets the rows as one array per column (``unnest``) in binary format: a statement of a fixed
shape that psycopg prepares once, and no text quoting of the bodies. SQLite gets a multi-row ``VALUES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, tuple_

from adapters.db.repositories import StoredEvent
from adapters.db.tables import InboxEvent

_TABLE = InboxEvent.__table__
_INSERT = "INSERT INTO inbox_events (vendor, event_type, dedup_key, order_id, body, received_at, enqueued_at) "
_CONFLICT = " ON CONFLICT (vendor, event_type, dedup_key) DO NOTHING RETURNING id, vendor, event_type, dedup_key"
_POSTGRESQL = (  # constant text; every value is bound
    _INSERT + "SELECT v, e, k, o, b, %(now)b, %(now)b FROM unnest(%(v)b::varchar[], %(e)b::varchar[], "  # noqa: S608
    "%(k)b::varchar[], %(o)b::varchar[], %(b)b::text[]) AS new(v, e, k, o, b)" + _CONFLICT)
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


def add_many(connection: Connection, events: Sequence[NewEvent], *, now: datetime) -> list[StoredEvent]:
    """Store each event once per deduplication key; one :class:`StoredEvent` per given event, in order.

    ``created`` is true for exactly one event per key that was not stored before: the first of its key in
    ``events``. Later copies in the same batch, and events whose key was already stored, come back as
    duplicates carrying the stored id. Rows are stamped as published now (``enqueued_at``), as the webhook
    publishes their wake-ups right after the commit; the caller commits.
    """
    first: dict[Key, NewEvent] = {}
    for event in events:
        first.setdefault(event.key, event)
    unique = list(first.values())
    if connection.dialect.name == "postgresql":
        created = _insert_postgresql(connection, unique, now)
    else:
        created = _insert_sqlite(connection, unique, now)
    ids = dict(created)
    missing = [key for key in first if key not in ids]
    found = _stored_ids(connection, missing) if missing else {}
    result: list[StoredEvent] = []
    for event in events:
        key = event.key
        new_id = ids.pop(key, None)  # only the first copy of a key takes the created row
        if new_id is not None:
            result.append(StoredEvent(new_id, created=True))
        else:
            stored = created.get(key) or found.get(key)
            if stored is None:
                raise LookupError(f"event {key} was neither inserted nor found")
            result.append(StoredEvent(stored, created=False))
    return result


def _insert_postgresql(connection: Connection, events: Sequence[NewEvent], now: datetime) -> dict[Key, int]:
    rows = connection.exec_driver_sql(_POSTGRESQL, {
        "now": now, "v": [e.vendor for e in events], "e": [e.event_type for e in events],
        "k": [e.dedup_key for e in events], "o": [e.order_id for e in events], "b": [e.body for e in events]})
    return {(vendor, event_type, key): int(row_id) for row_id, vendor, event_type, key in rows}


def _insert_sqlite(connection: Connection, events: Sequence[NewEvent], now: datetime) -> dict[Key, int]:
    process = _TABLE.c.received_at.type.bind_processor(connection.dialect)
    stamp: Any = process(now) if process is not None else now
    created: dict[Key, int] = {}
    for start in range(0, len(events), SQLITE_ROWS_PER_STATEMENT):
        chunk = events[start:start + SQLITE_ROWS_PER_STATEMENT]
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(chunk))  # placeholders only: values are bound
        params: list[Any] = []
        for e in chunk:
            params += (e.vendor, e.event_type, e.dedup_key, e.order_id, e.body, stamp, stamp)
        rows = connection.exec_driver_sql(_INSERT + "VALUES " + values + _CONFLICT, tuple(params))
        created.update({(vendor, event_type, key): int(row_id) for row_id, vendor, event_type, key in rows})
    return created


def _stored_ids(connection: Connection, keys: Sequence[Key]) -> dict[Key, int]:
    """Ids of events stored before (duplicate deliveries): rare, so a plain Core query."""
    rows = connection.execute(select(_TABLE.c.id, _TABLE.c.vendor, _TABLE.c.event_type, _TABLE.c.dedup_key)
                              .where(tuple_(_TABLE.c.vendor, _TABLE.c.event_type, _TABLE.c.dedup_key).in_(keys)))
    return {(vendor, event_type, key): int(row_id) for row_id, vendor, event_type, key in rows}
