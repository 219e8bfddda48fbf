"""The whole of dunlink running for a test: sandbox, webhook app, Celery workers and beat on a real Redis,
a real SMTP server catching mail, and a database of the test's own (SQLite or PostgreSQL)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.uow import SqlUnitOfWork
from adapters.email.capture import MailCatcher
from domain.case import DunningCase
from workers.processes import ProcessGroup, free_port, http_ready, log_ready

REDIS_BASE = os.environ.get("DUNLINK_TEST_REDIS_URL", "redis://127.0.0.1:6379")
SECRET = "test-ipn-secret"
_redis_dbs = itertools.cycle(range(1, 16))

VENDORS = """\
[vendors.acme]
name = "ACME Academy"
summary_email = "owner@acme.example"
locale = "de"
timezone = "Europe/Berlin"
reply_to = "support@acme.example"
copecart_ipn_secret = "{secret}"
replacement = "remaining_installments"
reminder_days = [3, 7]
expire_after_days = 14

[vendors.globex]
name = "Globex Courses"
summary_email = "billing@globex.example"
locale = "en"
timezone = "Europe/London"
copecart_ipn_secret = "{secret}"
replacement = "single_payment"
reminder_days = [2, 5]
expire_after_days = 10
"""

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

    def start_sandbox(self) -> None:
        port = free_port()
        self.sandbox_url = f"http://127.0.0.1:{port}"
        self.env["DUNLINK_PLATFORM_URL"] = self.sandbox_url
        self.group.start("sandbox", ["sandbox", "--port", str(port), "--webhook-base", self.api_url],
                         ready=http_ready(f"{self.sandbox_url}/sandbox/requests"))

    def start_api(self) -> None:
        port = int(self.api_url.rsplit(":", 1)[1])
        self.group.start("api", ["api", "--port", str(port)], ready=http_ready(f"{self.api_url}/healthz"))

    def start_worker(self, *extra: str) -> str:
        name = f"worker{next(self._workers)}"
        self.group.start(name, ["worker", "-n", f"{name}@%h", "-c", "1", "--without-gossip", "--without-mingle",
                                *extra], ready=log_ready("ready."), timeout=60)
        return name

    def start_beat(self) -> None:
        self.group.start("beat", ["beat", "-s", str(self.root / "beat-schedule")],
                         ready=log_ready("beat: Starting"), timeout=60)

    # -- the platform ---------------------------------------------------------------------------------------

    def seed(self, order: dict[str, Any]) -> None:
        response = httpx.post(f"{self.sandbox_url}/sandbox/orders", json=order, timeout=10)
        response.raise_for_status()

    def fail(self, order_id: str, installment: int) -> dict[str, Any]:
        response = httpx.post(f"{self.sandbox_url}/sandbox/orders/{order_id}/installments/{installment}/fail",
                              timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def pay(self, order_id: str, installment: int) -> dict[str, Any]:
        response = httpx.post(f"{self.sandbox_url}/sandbox/orders/{order_id}/installments/{installment}/pay",
                              timeout=30)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

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
    vendors.write_text(VENDORS.format(secret=SECRET), encoding="utf-8")
    broker_url = f"{REDIS_BASE}/{next(_redis_dbs)}"
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    mail = MailCatcher(root / "mail").start()
    api_port = free_port()
    env = {**os.environ, "DUNLINK_DATABASE_URL": database_url, "DUNLINK_BROKER_URL": broker_url,
           "DUNLINK_VENDORS_FILE": str(vendors), "DUNLINK_SMTP_URL": f"smtp://127.0.0.1:{mail.port}",
           "DUNLINK_MAIL_FROM": "dunning@dunlink.example", "DUNLINK_PLATFORM_TOKEN": "sandbox-token",
           "DUNLINK_PLATFORM_TIMEOUT": "2", "DUNLINK_LEASE_SECONDS": "8", **(extra_env or {})}
    group = ProcessGroup(env=env, log_dir=root / "logs", cwd=root)
    stack = Stack(root, database_url, broker_url, env, group, mail, api_url=f"http://127.0.0.1:{api_port}")
    try:
        with group:
            stack.start_sandbox()
            stack.start_api()
            for _ in range(workers):
                stack.start_worker()
            if beat:
                stack.start_beat()
            yield stack
    finally:
        mail.stop()
        client.flushdb()
        client.close()
