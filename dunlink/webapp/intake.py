"""Group commit for the webhook: verified events from many requests, stored by one writer in one transaction.

A request hands its event to :meth:`InboxWriter.store` and waits. One thread takes everything pending
(at most ``max_batch``), stores it with one ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, commits,
publishes the wake-ups of the events it created (one broker round trip), and only then answers each
waiting request. While it is busy with one batch the next one gathers, so under load a
commit serves dozens of requests, and at rest a request waits for its own commit only. The writer also
writes each event's ``webhook_stored`` log line, the lines of a batch at once.

Failures stay per batch: if the statement or the commit fails, every request of that batch gets
:class:`StorageUnavailable` (the webhook answers 503, CopeCart delivers again) and nothing of it is
published; the next batch starts on a fresh connection. A failed publish is not a failure: the events
are committed, their rows are stamped as published, and the relay publishes them again later. However
the database misbehaves, no request waits longer than ``timeout`` seconds.

Two writers do this: :class:`LoopInboxWriter` on PostgreSQL, a task on the event loop with psycopg's async
driver (no thread, so no handing the interpreter lock back and forth with the loop on every socket call:
about a quarter less CPU per delivery), and :class:`InboxWriter`, a thread, for SQLite. One batch at a time
is the faster choice: with two or four batches in flight the batches are smaller, each delivery costs more
CPU, and a busy api answered 10–20% fewer deliveries per second (bench/README.md).

On PostgreSQL a batch's ``INSERT`` commits by itself (autocommit: one round trip less per batch). If what
follows it fails (reading back the ids of copies of stored events; a failed publish is not a failure) the
batch is answered 503 although it was stored: CopeCart's redeliveries are then duplicates, answered ``OK``,
and the relay publishes the events. Nothing is lost and nothing is stored twice either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import structlog
from sqlalchemy import Engine

from adapters.db.inbox_batch import NewEvent, store_batch, store_batch_async
from adapters.db.repositories import StoredEvent
from dunlink.config.logs import log_lines
from dunlink.runtime.metrics import WEBHOOK_BATCH_SIZE

log = structlog.get_logger("dunlink.webhook")

MAX_BATCH = 256
# Longer than one batch can take when the database is slow but up (PostgreSQL: connect timeout 5 s plus the
# statement timeout below; SQLite: its busy timeout); past it the request is answered 503 whatever happens.
STORE_TIMEOUT_SECONDS = 20.0
STATEMENT_TIMEOUT_MS = 5_000
_SWEEP_SECONDS = 0.5


class StorageUnavailable(Exception):
    """The event was not stored: the database failed, or did not answer in time."""


Publish = Callable[[Sequence[int]], None]


@dataclass(slots=True)
class _Pending:
    event: NewEvent
    acted_on: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[StoredEvent]


@dataclass
class _Waiting:
    """The requests of one event loop, oldest first, for bounding how long each waits."""

    loop: asyncio.AbstractEventLoop
    timeout: float
    pending: deque[tuple[float, asyncio.Future[StoredEvent]]] = field(default_factory=deque)
    armed: bool = False

    def add(self, future: asyncio.Future[StoredEvent]) -> None:
        self.pending.append((time.monotonic() + self.timeout, future))
        if not self.armed:
            self.armed = True
            self.loop.call_later(_SWEEP_SECONDS, self.sweep)

    def sweep(self) -> None:
        now = time.monotonic()
        pending = self.pending
        while pending and (pending[0][1].done() or pending[0][0] <= now):
            _, future = pending.popleft()
            if not future.done():
                future.set_exception(StorageUnavailable("timed out"))
        if pending:
            self.loop.call_later(_SWEEP_SECONDS, self.sweep)
        else:
            self.armed = False


class InboxWriter:
    """One writer thread per process, started on first use; :meth:`close` lets it finish what is queued."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime], publish: Publish,
                 max_batch: int = MAX_BATCH, timeout: float = STORE_TIMEOUT_SECONDS) -> None:
        self.engine, self.clock, self.publish = engine, clock, publish
        self.max_batch, self.timeout = max_batch, timeout
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._waiting: dict[asyncio.AbstractEventLoop, _Waiting] = {}
        self._postgresql = engine.dialect.name == "postgresql"

    async def store(self, event: NewEvent, *, acted_on: bool) -> StoredEvent:
        """Store ``event`` in the next batch; raise :class:`StorageUnavailable` if that batch fails.

        When this returns the event is committed and, if it was created and ``acted_on``, its wake-up has
        been handed to the broker (or left to the relay if the broker failed).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoredEvent] = loop.create_future()
        if self._thread is None:
            self._start()
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting[loop] = _Waiting(loop, self.timeout)
            for other in [other for other in self._waiting if other.is_closed()]:
                del self._waiting[other]
        waiting.add(future)
        self._queue.put(_Pending(event, acted_on, loop, future))
        return await future

    def queued(self) -> int:
        """Events waiting for the writer (not counting the batch it is writing)."""
        return self._queue.qsize()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dunlink-inbox-writer", daemon=True)
                self._thread.start()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, then stop the thread (it starts again on the next :meth:`store`)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
                thread.join(timeout)

    # -- the writer thread -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                self._write(batch)
            except BaseException as exc:  # never leave a request waiting, whatever went wrong
                self._settle(batch, StorageUnavailable(type(exc).__name__))
                if not isinstance(exc, Exception):
                    raise
            if stop:
                return

    def _write(self, batch: list[_Pending]) -> None:
        live = [pending for pending in batch if not pending.future.done()]  # gave up waiting: not stored
        if not live:
            return
        WEBHOOK_BATCH_SIZE.observe(len(live))
        try:
            stored = self._commit([pending.event for pending in live])
        except Exception as exc:
            log.error("inbox_unavailable", events=len(live), error=type(exc).__name__)
            self._settle(live, StorageUnavailable(type(exc).__name__))
            return
        wake = _to_wake(live, stored)
        if wake:
            try:
                self.publish(wake)
            except Exception as exc:  # stored and answered; the relay publishes them later
                _publish_failed(wake, exc)
        self._settle(live, stored)
        _log_stored(live, stored)

    def _commit(self, events: list[NewEvent]) -> list[StoredEvent]:
        return store_batch(self.engine, events, now=self.clock(),
                           statement_timeout_ms=STATEMENT_TIMEOUT_MS if self._postgresql else None)

    def _settle(self, batch: list[_Pending], outcome: Sequence[StoredEvent] | StorageUnavailable) -> None:
        """Hand each request its result on its own event loop (one call per loop and batch)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[StoredEvent],
                                                           StoredEvent | StorageUnavailable]]] = {}
        for index, pending in enumerate(batch):
            result = outcome if isinstance(outcome, StorageUnavailable) else outcome[index]
            by_loop.setdefault(pending.loop, []).append((pending.future, result))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # its loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, results)


def _to_wake(live: Sequence[_Pending], stored: Sequence[StoredEvent]) -> list[int]:
    """Ids of the events a batch created that the workers act on: the wake-ups to publish."""
    return [result.id for pending, result in zip(live, stored, strict=True) if result.created and pending.acted_on]


def _publish_failed(wake: Sequence[int], exc: Exception) -> None:
    log.warning("enqueue_failed", events=len(wake), first_event_id=wake[0], error=type(exc).__name__)


def _log_stored(live: Sequence[_Pending], stored: Sequence[StoredEvent]) -> None:
    """Each event's ``webhook_stored`` line, the lines of a batch written at once."""
    log_lines("dunlink.webhook", [
        ("webhook_stored", {"vendor": p.event.vendor, "event_type": p.event.event_type, "order": p.event.order_id,
                            "event_id": result.id, "duplicate": not result.created})
        for p, result in zip(live, stored, strict=True)])


def _resolve(results: list[tuple[asyncio.Future[StoredEvent], StoredEvent | StorageUnavailable]]) -> None:
    for future, result in results:
        if future.done():
            continue
        if isinstance(result, StorageUnavailable):
            future.set_exception(StorageUnavailable(*result.args))
        else:
            future.set_result(result)


AsyncPublish = Callable[[Sequence[int]], Awaitable[None]]


class LoopInboxWriter:
    """The same group commit on PostgreSQL, run by a task on the event loop with psycopg's async driver.

    No thread: the requests and the writer share the loop, so nothing hands the interpreter lock back and
    forth between a writer thread and the loop for every socket call. The batch's round trips, its commit
    and its publish are awaited while the loop goes on reading the next deliveries, which gather into the
    next batch. A batch is bounded by ``timeout`` seconds in all; a batch that fails or times out answers
    each of its requests :class:`StorageUnavailable` and leaves its connection to be replaced.
    """

    def __init__(self, conninfo: str, *, clock: Callable[[], datetime], publish: AsyncPublish,
                 max_batch: int = MAX_BATCH, timeout: float = STORE_TIMEOUT_SECONDS) -> None:
        self.conninfo, self.clock, self.publish = conninfo, clock, publish
        self.max_batch, self.timeout = max_batch, timeout
        self._pending: deque[_Pending] = deque()
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Any = None
        self._closing = False

    async def store(self, event: NewEvent, *, acted_on: bool) -> StoredEvent:
        loop = asyncio.get_running_loop()
        if self._task is None or self._loop is not loop or self._task.done():
            self._start(loop)
        assert self._ready is not None
        future: asyncio.Future[StoredEvent] = loop.create_future()
        self._pending.append(_Pending(event, acted_on, loop, future))
        self._ready.set()
        return await future

    def queued(self) -> int:
        return len(self._pending)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._ready, self._closing = loop, asyncio.Event(), False
        self._connection = None  # a connection belongs to the loop that opened it
        self._task = loop.create_task(self._run(), name="dunlink-inbox-writer")

    async def aclose(self) -> None:
        """Store what is queued, then stop the task and close the connection."""
        task = self._task
        if task is None or task.done() or self._loop is not asyncio.get_running_loop():
            return
        self._closing = True
        assert self._ready is not None
        self._ready.set()
        await task
        await self._drop_connection()

    async def _run(self) -> None:
        assert self._ready is not None
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                try:
                    await self._write(batch)
                except BaseException as exc:  # never leave a request waiting, whatever went wrong
                    _resolve([(p.future, StorageUnavailable(type(exc).__name__)) for p in batch])
                    if not isinstance(exc, Exception):
                        raise
            if self._closing:
                return

    async def _write(self, batch: list[_Pending]) -> None:
        live = [pending for pending in batch if not pending.future.done()]  # cancelled: not stored
        if not live:
            return
        WEBHOOK_BATCH_SIZE.observe(len(live))
        try:
            stored = await asyncio.wait_for(self._commit([pending.event for pending in live]), self.timeout)
        except Exception as exc:
            await self._drop_connection()
            log.error("inbox_unavailable", events=len(live), error=type(exc).__name__)
            _resolve([(pending.future, StorageUnavailable(type(exc).__name__)) for pending in live])
            return
        wake = _to_wake(live, stored)
        if wake:
            try:
                await asyncio.wait_for(self.publish(wake), self.timeout)
            except Exception as exc:  # stored and answered; the relay publishes them later
                _publish_failed(wake, exc)
        _resolve([(pending.future, result) for pending, result in zip(live, stored, strict=True)])
        _log_stored(live, stored)

    async def _commit(self, events: list[NewEvent]) -> list[StoredEvent]:
        if self._connection is None:

            # Autocommit: the batch's INSERT is its own transaction, committed in the statement's round trip.
            self._connection = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=5,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
        return await store_batch_async(self._connection, events, now=self.clock())

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
