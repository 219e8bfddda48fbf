"""The whole of dunlink running for a test: sandbox, webhook app, Celery workers and beat on a real Redis,
a real SMTP server catching mail, and a database of the test's own (SQLite or PostgreSQL)."""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis
from sqlalchemy import select
from sqlalchemy.engine import make_url

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.tables import InboxEvent
from adapters.db.uow import SqlUnitOfWork
from adapters.email.capture import MailCatcher, ReceivedMail
from domain.case import CaseEvent, DunningCase
from dunlink.config.settings import Settings
from dunlink.devtools.processes import (
    Command,
    Process,
    ProcessGroup,
    api_command,
    beat_command,
    free_port,
    sandbox_command,
    stop_process,
    worker_command,
)
from dunlink.runtime.bootstrap import Services, build_services
from dunlink.usecases.ports import EMAIL_QUEUE, PLATFORM_QUEUE
from tests.support import db
from tests.support.command import due
from tests.support.vendors import vendors_toml

# The shared local Redis; stacks use a server of their test run's own unless DUNLINK_TEST_REDIS_URL is set.
REDIS_BASE = os.environ.get("DUNLINK_TEST_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_PRIVATE_START_S = 10.0
SECRET = "test-ipn-secret-0a5e7c"
# DUNLINK_OPS_TOKEN of the stacks: /metrics and the named checks of /healthz answer only to it.
OPS_TOKEN = "test-ops-token-6e1b93d0"
OPS_HEADERS = {"Authorization": f"Bearer {OPS_TOKEN}"}
_redis_dbs = itertools.cycle(range(1, 16))

# The stack's vendors file, with ``{secret}`` where each vendor's IPN secret goes.
VENDORS = vendors_toml(dict.fromkeys(("acme", "globex", "initech"), "{secret}"))
# The stacks' own, with hooli, which makes its replacements by hand (and so needs DUNLINK_SECRET_KEY).
STACK_VENDORS = vendors_toml(dict.fromkeys(("acme", "globex", "initech", "hooli", "umbrella"), "{secret}"))
# DUNLINK_SECRET_KEY of the stacks: signs the vendor page's tokens (hooli makes its links by hand).
SECRET_KEY = "test-secret-key-for-vendor-pages-4f9a2c71d0"

T = TypeVar("T")


def order_json(order_id: str, *, vendor: str = "acme", installments: int = 6, amount: int = 5000, paid: int = 2,
               first_name: str = "Anna", email: str = "anna@example.com") -> dict[str, Any]:
    """An active installment order of ``installments`` × ``amount`` cents, the first ``paid`` paid."""
    return {
        "id": order_id, "vendor": vendor, "status": "active",
        "product": {"id": "p-42", "name": "Coaching Program"},
        "buyer": {"id": "b-7", "email": email, "first_name": first_name, "last_name": "Meier",
                  "country_code": "DE"},
        "currency": "EUR",
        "plan": {"kind": "installments", "frequency": "monthly", "installments": [
            {"number": n, "amount": amount, "due_date": f"{2026 + (n + 6) // 12}-{(n + 6) % 12 + 1:02d}-01",
             "status": "paid" if n <= paid else "open"} for n in range(1, installments + 1)]},
        "replaces": None,
    }


@dataclass
class Stack:
    root: Path
    database_url: str
    broker_url: str
    env: dict[str, str]
    group: ProcessGroup
    mail: MailCatcher
    sandbox_url: str = ""
    api_url: str = ""
    _workers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # -- processes ------------------------------------------------------------------------------------------

    def _api_command(self) -> Command:
        return api_command(int(self.api_url.rsplit(":", 1)[1]))

    def start_api(self, *, ready: Callable[[Process], bool] | None = None) -> None:
        command = self._api_command()
        self.group.start("api", command.args, ready=ready or command.ready)

    def start_together(self, *, workers: int, beat: bool) -> None:
        """Start the sandbox, api, workers and beat side by side, then wait for each to be ready."""
        port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{port}"
        self.env["DUNLINK_PLATFORM_URL"] = self.env["DUNLINK_DIGISTORE24_URL"] = self.sandbox_url
        commands = {"sandbox": sandbox_command(port, webhook_base=self.api_url),
                    "api": self._api_command()}
        commands.update(self._worker() for _ in range(workers))
        if beat:
            commands["beat"] = beat_command(self.root / "beat-schedule")
        self.group.start_together(commands, timeout=60)

    def _worker(self) -> tuple[str, Command]:
        name = f"worker{next(self._workers)}"
        return name, worker_command(name, concurrency=1)

    def start_worker(self, *extra: str) -> str:
        name, command = self._worker()
        self.group.start(name, [*command.args, *extra], ready=command.ready, timeout=60)
        return name

    # -- the platform ---------------------------------------------------------------------------------------

    def seed(self, order: dict[str, Any]) -> None:
        response = httpx.post(f"{self.sandbox_url}/sandbox/orders", json=order, timeout=10)
        response.raise_for_status()

    def fail(self, order_id: str, installment: int) -> dict[str, Any]:
        return self._installment(order_id, installment, "fail")

    def pay(self, order_id: str, installment: int) -> dict[str, Any]:
        return self._installment(order_id, installment, "pay")

    def _installment(self, order_id: str, installment: int, outcome: str) -> dict[str, Any]:
        """The sandbox marks the installment and delivers the matching signed IPN; its answer says how that went."""
        url = f"{self.sandbox_url}/sandbox/orders/{order_id}/installments/{installment}/{outcome}"
        response = httpx.post(url, timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def phone_offer(self, offer: dict[str, Any]) -> dict[str, Any]:
        """What the vendor makes with CopeCart's phone option: a new order and its payment link."""
        response = httpx.post(f"{self.sandbox_url}/sandbox/phone-offers", json=offer, timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def vendor_cancel(self, order_id: str) -> dict[str, Any]:
        """The vendor cancels an order in CopeCart; its payment.recurring.cancelled IPN is delivered."""
        response = httpx.post(f"{self.sandbox_url}/sandbox/orders/{order_id}/vendor-cancel", timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    # -- Digistore24 (the sandbox's side of it) ------------------------------------------------------------

    def ds24(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(method, f"{self.sandbox_url}/sandbox/digistore24{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def order(self, order_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.sandbox_url}/v1/orders/{order_id}",
                             headers={"Authorization": "Bearer sandbox-token"}, timeout=10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def replacements(self, order_id: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.sandbox_url}/sandbox/orders", params={"replaces": order_id}, timeout=10)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = httpx.get(f"{self.sandbox_url}/sandbox/requests", timeout=10).json()
        return result

    def ipns(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = httpx.get(f"{self.sandbox_url}/sandbox/ipns", timeout=10).json()
        return result

    def faults(self, **faults: float) -> None:
        httpx.put(f"{self.sandbox_url}/sandbox/faults", json=faults, timeout=10).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.sandbox_url}/sandbox/faults", timeout=10).raise_for_status()

    def deliver(self, vendor: str, body: bytes, signature: str) -> httpx.Response:
        return httpx.post(f"{self.api_url}/webhooks/copecart/{vendor}", content=body, timeout=30,
                          headers={"X-Copecart-Signature": signature, "Content-Type": "application/json"})

    def due(self, at: datetime) -> str:
        """``dunlink due --now at`` with the stack's settings: time moved on for every case at once."""
        return due(at, env=self.env, cwd=self.root)

    # -- what dunlink recorded ------------------------------------------------------------------------------

    @contextmanager
    def uow(self) -> Iterator[SqlUnitOfWork]:
        engine = make_engine(self.database_url)
        try:
            with SqlUnitOfWork(make_session_factory(engine)) as uow:
                yield uow
        finally:
            engine.dispose()

    def cases(self) -> list[DunningCase]:
        with self.uow() as uow:
            return uow.cases.search(limit=10_000)

    def case_for(self, order_id: str, vendor: str = "acme") -> DunningCase | None:
        with self.uow() as uow:
            return uow.cases.latest_for_order(vendor, order_id)

    def case_in(self, order_id: str, state: str, vendor: str = "acme") -> DunningCase | None:
        """The order's latest case if it is in ``state`` (for ``eventually``)."""
        case = self.case_for(order_id, vendor)
        return case if case is not None and case.state.value == state else None

    def timeline(self, case_id: str) -> list[CaseEvent]:
        with self.uow() as uow:
            return uow.cases.timeline(case_id)

    def inbox(self) -> list[InboxEvent]:
        """Every stored webhook event, oldest first (detached rows: read their columns only)."""
        with self.uow() as uow:
            rows = list(uow.session.scalars(select(InboxEvent).order_by(InboxEvent.id)))
            uow.session.expunge_all()  # kept readable after the unit of work rolls back
            return rows

    # -- Redis, mail and in-process services ----------------------------------------------------------------

    def queue_lengths(self) -> dict[str, int]:
        """Messages waiting in each Celery queue (published and not yet taken by a worker)."""
        with redis.Redis.from_url(self.broker_url) as client:
            return {queue: int(client.llen(queue)) for queue in (PLATFORM_QUEUE, EMAIL_QUEUE)}

    def settled(self) -> bool:
        """Nothing waits in Redis and every stored event was acted on: a point where effects can be counted."""
        return not any(self.queue_lengths().values()) and all(row.processed_at for row in self.inbox())

    def mails_to(self, address: str) -> list[ReceivedMail]:
        return [mail for mail in self.mail.messages if address in mail.rcpt_tos]

    def settings(self) -> Settings:
        """The settings the stack's processes run with, for driving the pipeline in this process."""
        return Settings(**{key.removeprefix("DUNLINK_").lower(): value  # type: ignore[arg-type]
                           for key, value in self.env.items() if key.startswith("DUNLINK_")})

    @contextmanager
    def services(self) -> Iterator[tuple[Services, list[tuple[str, list[Any], str]]]]:
        """The pipeline's services in this process, on the stack's database, sandbox and mail catcher.

        Wake-ups are collected in the yielded list instead of being published, so a test decides which
        steps run here and which are left to the workers.
        """
        published: list[tuple[str, list[Any], str]] = []
        built = build_services(self.settings(), enqueue=lambda task, args, queue: published.append(
            (task, args, queue)))
        try:
            yield built, published
        finally:
            built.engine.dispose()

    @contextmanager
    def database_down(self) -> Iterator[str]:
        """The database unreachable for the webhook server while inside; yields the server's URL.

        PostgreSQL refuses new connections and its open ones are ended under the running server. A SQLite
        file can't be taken from a process that has it open, so the server is restarted (on the real file: it
        refuses to start without its database, and holds no connection until a request comes), then the file
        is put aside and a folder stands in its place; afterwards the server is restarted on the file again.
        """
        url = make_url(self.database_url)
        if url.get_backend_name() == "postgresql":
            with db.postgres_away(url.database or ""):
                yield self.api_url
            return
        assert url.database is not None
        path = Path(url.database)
        aside = [(path.with_name(path.name + suffix), path.with_name(path.name + suffix + ".aside"))
                 for suffix in ("", "-wal", "-shm")]
        self.group.stop("api")
        self.start_api()
        for real, kept in aside:
            if real.exists():
                real.rename(kept)
        path.mkdir()
        try:
            yield self.api_url
        finally:
            self.group.stop("api")
            path.rmdir()
            for real, kept in aside:
                if kept.exists():
                    kept.rename(real)
            self.start_api()


_private_redis: list[str] = []


def redis_base() -> str:
    """The Redis server the stacks use: ``DUNLINK_TEST_REDIS_URL``, else one of this test run's own.

    A shared Redis would let another test run's workers on the same database number take this run's
    messages (and its teardown flush them), so by default every run starts a private, memory-only server.
    """
    given = os.environ.get("DUNLINK_TEST_REDIS_URL")
    if given:
        return given.rstrip("/")
    if not _private_redis:
        port = free_port()
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        atexit.register(stop_process, server, grace=5)
        url = f"redis://127.0.0.1:{port}"
        deadline = time.monotonic() + REDIS_PRIVATE_START_S
        while True:
            try:
                with redis.Redis.from_url(url, socket_timeout=1) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
        _private_redis.append(url)
    return _private_redis[0]


def eventually(probe: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@contextmanager
def running_stack(root: Path, database_url: str, *, beat: bool = True, workers: int = 1,
                  extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Everything started and wired together; stopped (and Redis database flushed) afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    vendors = root / "vendors.toml"
    vendors.write_text(STACK_VENDORS.format(secret=SECRET), encoding="utf-8")
    broker_url = f"{redis_base()}/{next(_redis_dbs)}"
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    mail = MailCatcher(root / "mail").start()
    api_port = free_port()
    env = {**os.environ, "DUNLINK_DATABASE_URL": database_url, "DUNLINK_BROKER_URL": broker_url,
           "DUNLINK_VENDORS_FILE": str(vendors), "DUNLINK_SMTP_URL": f"smtp://127.0.0.1:{mail.port}",
           "DUNLINK_MAIL_FROM": "dunning@dunlink.example", "DUNLINK_PLATFORM_TOKEN": "sandbox-token",
           "DUNLINK_OPS_TOKEN": OPS_TOKEN, "DUNLINK_PLATFORM_TIMEOUT": "2", "DUNLINK_VENDOR_SUMMARIES": "false",
           "DUNLINK_LEASE_SECONDS": "8", "DUNLINK_SECRET_KEY": SECRET_KEY,
           "DUNLINK_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
           **(extra_env or {})}
    group = ProcessGroup(env=env, log_dir=root / "logs", cwd=root)
    stack = Stack(root, database_url, broker_url, env, group, mail, api_url=f"http://127.0.0.1:{api_port}")
    try:
        with group:
            try:
                stack.start_together(workers=workers, beat=beat)
                yield stack
            finally:
                # The test is over: nothing is left to finish gracefully, and a warm shutdown of each process
                # in turn would cost seconds per test.
                for process in group.processes.values():
                    process.kill(signal.SIGKILL)
    finally:
        mail.stop()
        client.flushdb()
        client.close()
