"""Concurrent deliveries are committed together, and each is answered for what happened to its own batch.

The webhook app runs in process on SQLite and PostgreSQL. A gate inside the writer holds one batch while the
test lines up the next requests behind it, so which deliveries share a commit is known, not hoped for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from adapters.db.inbox_batch import NewEvent
from adapters.db.repositories import REQUEUE_AFTER
from adapters.db.tables import InboxEvent
from dunlink.config.settings import Settings
from dunlink.devtools.processes import free_port
from dunlink.runtime.bootstrap import Services, build_services, utcnow
from dunlink.usecases.pipeline import relay
from dunlink.usecases.ports import PLATFORM_QUEUE
from dunlink.webapp.app import create_app
from dunlink.webapp.intake import InboxWriter, LoopInboxWriter, StorageUnavailable
from platforms.copecart.webhook import signature
from tests.support import db
from tests.support.stack import SECRET, VENDORS
from workers.registry import celery_services

FIXTURE = Path(__file__).parents[2] / "fixtures" / "copecart" / "payment_failed_breakdown.json"
Published = list[tuple[str, list[Any], str]]


class Gate:
    """Holds the writer inside one call until released; counts the calls (one per batch)."""

    def __init__(self) -> None:
        self.entered, self.released = threading.Event(), threading.Event()
        self.calls = 0
        self.armed = False

    def hold_next(self) -> None:
        self.entered.clear()
        self.released.clear()
        self.armed = True

    def __call__(self) -> None:
        self.calls += 1
        if self.armed:
            self.armed = False
            self.entered.set()
            assert self.released.wait(30), "the test never released the gate"

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10), "the writer never reached the gate"


class _Commit:
    """``released.set()`` for :class:`LockGate`: ends the transaction that holds the lock."""

    def __init__(self, gate: LockGate) -> None:
        self.gate = gate

    def set(self) -> None:
        self.gate.release()


class LockGate(Gate):
    """On PostgreSQL the writer runs on the event loop, where blocking it would block the requests too: the
    batch is held in the database instead, by a lock on the inbox table that its INSERT waits for."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database = make_url(database_url).database
        self.holder: psycopg.Connection[Any] | None = None
        self.released = _Commit(self)  # type: ignore[assignment]

    def hold_next(self) -> None:
        self.holder = psycopg.connect(db._conninfo(db.database_url(self.database or "")))
        self.holder.execute("LOCK TABLE inbox_events IN SHARE ROW EXCLUSIVE MODE")

    def __call__(self) -> None:
        self.calls += 1

    def release(self) -> None:
        holder, self.holder = self.holder, None
        if holder is not None:
            with contextlib.suppress(psycopg.Error):  # ended with the database's outage: the lock is gone anyway
                holder.commit()
            holder.close()

    async def wait_entered(self) -> None:
        deadline = time.monotonic() + 10
        while not await asyncio.to_thread(self._waiting):
            assert time.monotonic() < deadline, "the writer never reached the lock"
            await asyncio.sleep(0.01)

    async def wait_batches(self, count: int) -> None:
        """Wait until ``count`` batches (from as many connections) wait for the lock at once."""
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(self.batches_waiting) < count:
            assert time.monotonic() < deadline, f"{self.batches_waiting()} of {count} batches reached the lock"
            await asyncio.sleep(0.01)

    def _waiting(self) -> bool:
        return self.batches_waiting() > 0

    def batches_waiting(self) -> int:
        with psycopg.connect(db._conninfo(db.ADMIN_URL), autocommit=True) as admin:
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = "
                                "'Lock' AND query LIKE 'INSERT INTO inbox_events%%'", (self.database,)).fetchone()
        return int(row[0]) if row else 0


def _gate(database_url: str) -> Gate:
    return LockGate(database_url) if make_url(database_url).get_backend_name() == "postgresql" else Gate()


@dataclasses.dataclass
class Intake:
    services: Services
    published: Published
    gate: Gate
    writer: InboxWriter | LoopInboxWriter

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(self.services)
        self.writer = app.state.inbox_writer
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://dunlink.test") as client:
            yield client
        await self.writer.aclose()

    async def queued(self, count: int) -> None:
        """Wait until ``count`` events wait behind the batch the writer is on."""
        deadline = time.monotonic() + 10
        while self.writer.queued() < count:
            assert time.monotonic() < deadline, f"{self.writer.queued()} of {count} deliveries queued"
            await asyncio.sleep(0.01)

    def rows(self) -> list[tuple[int, str, str, str]]:
        table = InboxEvent.__table__
        with self.services.engine.connect() as connection:
            return [(row_id, vendor, event_type, key) for row_id, vendor, event_type, key in connection.execute(
                select(table.c.id, table.c.vendor, table.c.event_type, table.c.dedup_key).order_by(table.c.id))]

    def woken(self) -> list[int]:
        assert {(task, queue) for task, _, queue in self.published} <= {("dunlink.process_event", PLATFORM_QUEUE)}
        return sorted(args[0] for _, args, _ in self.published)


def _services(database_url: str, tmp_path: Path, gate: Gate, published: Published | None, **settings: Any
              ) -> Services:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(VENDORS.format(secret=SECRET), encoding="utf-8")
    config = Settings(database_url=database_url, vendors_file=vendors, **settings)
    if published is None:
        services = celery_services(config)  # wake-ups go to the broker named in the settings
    else:
        services = build_services(config, enqueue=lambda task, args, queue: published.append((task, args, queue)))

    def clock() -> datetime:  # the writer reads the time once per batch, inside its transaction
        gate()
        return utcnow()

    return dataclasses.replace(services, clock=clock)


@pytest.fixture
def intake(database_url: str, tmp_path: Path) -> Iterator[Intake]:
    gate, published = _gate(database_url), []
    services = _services(database_url, tmp_path, gate, published)
    yield Intake(services, published, gate, writer=None)  # type: ignore[arg-type]
    gate.released.set()
    services.engine.dispose()


def _delivery(transaction_id: str, *, event_type: str = "payment.failed", order: str = "CC-1001") -> bytes:
    fields = json.loads(FIXTURE.read_text(encoding="utf-8"))
    fields.update(transaction_id=transaction_id, event_type=event_type, order_id=order)
    return json.dumps(fields).encode("utf-8")


async def _post(client: httpx.AsyncClient, body: bytes) -> tuple[int, str]:
    answer = await client.post("/webhooks/copecart/acme", content=body,
                               headers={"X-Copecart-Signature": signature(SECRET, body)})
    return answer.status_code, answer.text


async def _behind_the_gate(intake: Intake, client: httpx.AsyncClient, held: bytes, queued: Sequence[bytes]
                           ) -> tuple[asyncio.Task[tuple[int, str]], list[asyncio.Task[tuple[int, str]]]]:
    """Send ``held`` and keep its batch at the gate; send ``queued`` so they wait behind it, together."""
    intake.gate.hold_next()
    first = asyncio.create_task(_post(client, held))
    await intake.gate.wait_entered()
    rest = [asyncio.create_task(_post(client, body)) for body in queued]
    await intake.queued(len(queued))
    return first, rest


def test_concurrent_copies_in_one_batch_store_one_row_and_wake_once_each(intake: Intake) -> None:
    a, b, c = _delivery("T-A"), _delivery("T-B", order="CC-1002"), _delivery("T-C", order="CC-1003")
    other = _delivery("T-O", event_type="payment.trial_started", order="CC-1004")  # stored, not acted on

    async def scenario() -> tuple[tuple[int, str], list[tuple[int, str]]]:
        async with intake.client() as client:
            first, rest = await _behind_the_gate(intake, client, a, [b, a, b, c, other, b, other, a])
            batches_before = intake.gate.calls
            intake.gate.released.set()
            answers = await asyncio.gather(*rest)
            assert intake.gate.calls == batches_before + 1, "the queued deliveries were not committed together"
            return await first, list(answers)

    first, answers = asyncio.run(scenario())

    assert [first, *answers] == [(200, "OK")] * 9
    rows = intake.rows()
    assert [(vendor, event_type, key) for _, vendor, event_type, key in rows] == [
        ("acme", "payment.failed", "T-A"), ("acme", "payment.failed", "T-B"), ("acme", "payment.failed", "T-C"),
        ("acme", "payment.trial_started", "T-O")]
    assert intake.woken() == sorted(row_id for row_id, _, event_type, _ in rows if event_type == "payment.failed")


def test_database_away_while_deliveries_wait_answers_them_503_and_they_are_stored_once_when_it_is_back(
        intake: Intake, database_url: str) -> None:
    a, b, c = _delivery("T-A"), _delivery("T-B", order="CC-1002"), _delivery("T-C", order="CC-1003")

    async def scenario() -> tuple[int, list[int]]:
        async with intake.client() as client:
            # A's batch is at the gate when the database goes; B, C and a copy of B wait behind it.
            first, rest = await _behind_the_gate(intake, client, a, [b, c, b])
            with db.database_away(intake.services.engine, database_url):
                intake.gate.released.set()
                answers = await asyncio.gather(*rest)
                assert [status for status, _ in answers] == [503, 503, 503]
                assert all(text != "OK" for _, text in answers)
                # On PostgreSQL A's INSERT already waits in the database for the lock the outage ends: it
                # fails with its connection (503), or gets in and commits first (OK, and woken). Either
                # answer must be true to what was stored, which the end of the test checks.
                first_status = (await first)[0]
                assert first_status in (200, 503)
                woken_while_away = intake.woken()

            # Back: the writer works again, and every redelivery is stored and woken exactly once.
            again = await asyncio.gather(*(_post(client, body) for body in (a, b, c, b, a)))
            assert again == [(200, "OK")] * 5
        return first_status, woken_while_away

    first_status, woken_while_away = asyncio.run(scenario())
    rows = intake.rows()
    assert sorted(key for *_, key in rows) == ["T-A", "T-B", "T-C"]
    assert woken_while_away == [row_id for row_id, *_, key in rows if key == "T-A" and first_status == 200]
    assert intake.woken() == sorted(row_id for row_id, *_ in rows)


def test_a_batch_on_a_connection_the_server_ended_answers_503_and_the_next_batch_reconnects(
        postgres_url: str, tmp_path: Path) -> None:
    gate, published = Gate(), []
    intake = Intake(_services(postgres_url, tmp_path, gate, published), published, gate, writer=None)  # type: ignore[arg-type]
    a, b = _delivery("T-A"), _delivery("T-B", order="CC-1002")

    async def scenario() -> list[tuple[int, str]]:
        async with intake.client() as client:
            assert await _post(client, a) == (200, "OK")  # the pool now holds the writer's connection
            with psycopg.connect(db._conninfo(db.ADMIN_URL), autocommit=True) as admin:  # a server restart
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                              (make_url(postgres_url).database,))
            return [await _post(client, b), await _post(client, b), await _post(client, a)]

    try:
        assert asyncio.run(scenario()) == [(503, "storage unavailable, try again"), (200, "OK"), (200, "OK")]
        rows = intake.rows()
        assert sorted(key for *_, key in rows) == ["T-A", "T-B"]
        assert intake.woken() == sorted(row_id for row_id, *_ in rows)
    finally:
        intake.services.engine.dispose()


def test_a_writer_stuck_on_the_database_answers_503_within_the_bound_and_recovers(
        database_url: str, tmp_path: Path) -> None:
    gate, published = Gate(), []
    services = _services(database_url, tmp_path, gate, published)
    writer = InboxWriter(services.engine, clock=services.clock, timeout=1.0,
                         publish=lambda ids: published.extend(("dunlink.process_event", [i], PLATFORM_QUEUE)
                                                              for i in ids))
    event = {key: NewEvent("acme", "payment.failed", key, "CC-1", "{}") for key in ("T-1", "T-2", "T-3")}

    async def scenario() -> None:
        gate.hold_next()
        started = time.monotonic()
        stuck = asyncio.create_task(writer.store(event["T-1"], acted_on=True))
        await gate.wait_entered()
        behind = asyncio.create_task(writer.store(event["T-2"], acted_on=True))
        for task in (stuck, behind):
            with pytest.raises(StorageUnavailable):
                await task
        assert time.monotonic() - started < 2.5
        gate.released.set()
        # T-1's batch was already being written: it is committed and woken after all, so CopeCart's retry
        # is a duplicate. T-2 had not been taken yet: it was given up, and its retry is the first copy.
        assert (await writer.store(event["T-3"], acted_on=True)).created
        assert not (await writer.store(event["T-1"], acted_on=True)).created
        assert (await writer.store(event["T-2"], acted_on=True)).created

    try:
        asyncio.run(scenario())
    finally:
        gate.released.set()
        writer.close()
        services.engine.dispose()
    table = InboxEvent.__table__
    with services.engine.connect() as connection:
        stored = dict(connection.execute(select(table.c.dedup_key, table.c.id)).all())
    assert sorted(stored) == ["T-1", "T-2", "T-3"]
    assert sorted(args[0] for _, args, _ in published) == sorted(stored.values())


def test_broker_down_the_delivery_is_stored_and_answered_ok_and_the_relay_publishes_it(
        database_url: str, tmp_path: Path) -> None:
    gate = Gate()
    services = _services(database_url, tmp_path, gate, None, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    intake = Intake(services, [], gate, writer=None)  # type: ignore[arg-type]
    body = _delivery("T-A")

    async def scenario() -> list[tuple[int, str]]:
        async with intake.client() as client:
            return [await _post(client, body), await _post(client, body)]

    started = time.monotonic()
    try:
        assert asyncio.run(scenario()) == [(200, "OK")] * 2
        assert time.monotonic() - started < 5
        [(event_id, *_)] = intake.rows()

        # The relay finds it once the webhook's own publish would have been taken by now, and publishes it.
        relayed: Published = []
        later = utcnow() + REQUEUE_AFTER + timedelta(seconds=1)
        report = relay(dataclasses.replace(services, clock=_fixed(later),
                                           enqueue=lambda task, args, queue: relayed.append((task, args, queue))))
        assert report.events == 1
        assert relayed == [("dunlink.process_event", [event_id], PLATFORM_QUEUE)]
    finally:
        services.engine.dispose()


def _fixed(now: datetime) -> Callable[[], datetime]:
    return lambda: now


def test_on_postgresql_a_batch_stuck_in_the_database_answers_503_within_the_bound_and_is_not_stored(
        postgres_url: str, tmp_path: Path) -> None:
    gate, published = LockGate(postgres_url), []
    services = _services(postgres_url, tmp_path, gate, published)

    async def publish(ids: Sequence[int]) -> None:
        published.extend(("dunlink.process_event", [i], PLATFORM_QUEUE) for i in ids)

    conninfo = services.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    writer = LoopInboxWriter(conninfo, clock=services.clock, publish=publish, timeout=1.0)
    event = {key: NewEvent("acme", "payment.failed", key, "CC-1", "{}") for key in ("T-1", "T-2")}

    async def scenario() -> None:
        gate.hold_next()
        started = time.monotonic()
        stuck = asyncio.create_task(writer.store(event["T-1"], acted_on=True))
        await gate.wait_entered()
        with pytest.raises(StorageUnavailable):
            await stuck
        assert time.monotonic() - started < 2.5
        behind = asyncio.create_task(writer.store(event["T-2"], acted_on=True))
        gate.released.set()
        assert (await behind).created
        # T-1's statement was cancelled with its connection: nothing of it was stored, so CopeCart's retry is
        # the first copy, and is woken.
        assert (await writer.store(event["T-1"], acted_on=True)).created
        await writer.aclose()

    try:
        asyncio.run(scenario())
    finally:
        gate.released.set()
        services.engine.dispose()
    table = InboxEvent.__table__
    with services.engine.connect() as connection:
        stored = dict(connection.execute(select(table.c.dedup_key, table.c.id)).all())
    assert sorted(stored) == ["T-1", "T-2"]
    assert sorted(args[0] for _, args, _ in published) == sorted(stored.values())


def test_on_postgresql_two_api_processes_storing_copies_in_opposite_orders_each_store_once(
        postgres_url: str, tmp_path: Path) -> None:
    """Two api processes (two writers, two connections) hold copies of the same deliveries in opposite
    orders, released together: neither batch deadlocks on the other, and each delivery is stored once."""
    gate, published = LockGate(postgres_url), []
    services = _services(postgres_url, tmp_path, gate, published)
    conninfo = services.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    keys = [f"T-{n:03d}" for n in range(200)]  # one batch each (at most 256)
    orders = {"first": keys, "second": list(reversed(keys))}
    results: dict[str, list[tuple[str, bool]]] = {}
    errors: list[BaseException] = []

    def api_process(name: str) -> None:
        async def publish(ids: Sequence[int]) -> None:
            published.extend(("dunlink.process_event", [i], PLATFORM_QUEUE) for i in ids)

        writer = LoopInboxWriter(conninfo, clock=services.clock, publish=publish, timeout=10.0)

        async def batch() -> None:
            stored = await asyncio.gather(*(writer.store(NewEvent("acme", "payment.failed", key, "CC-1", "{}"),
                                                         acted_on=True) for key in orders[name]))
            results[name] = [(key, result.created) for key, result in zip(orders[name], stored, strict=True)]
            await writer.aclose()

        try:
            asyncio.run(batch())
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    gate.hold_next()
    try:
        threads = [threading.Thread(target=api_process, args=(name,)) for name in orders]
        for thread in threads:
            thread.start()
        asyncio.run(gate.wait_batches(2))  # a batch of each process waits for the lock
        gate.released.set()
        for thread in threads:
            thread.join(30)
    finally:
        gate.released.set()
        services.engine.dispose()
    assert errors == []
    created = sorted(key for name in orders for key, was_created in results[name] if was_created)
    assert created == keys, "each delivery created exactly once across the two processes"
    table = InboxEvent.__table__
    with services.engine.connect() as connection:
        stored = dict(connection.execute(select(table.c.dedup_key, table.c.id)).all())
    assert sorted(stored) == keys
    assert sorted(args[0] for _, args, _ in published) == sorted(stored.values())
