"""``dunlink soak``: the whole pipeline under load and faults, then checked from the outside.

It starts every real process (sandbox, webhook app, several workers, beat), a mail catcher, a Redis of its
own and a throwaway PostgreSQL database; fails N installments across several vendors while the sandbox
injects errors, timeouts and rate limits; re-delivers some IPNs byte for byte; races ``payment.made``
against the pipeline; pays some replacements once their link arrived; SIGKILLs workers and restarts them;
restarts Redis once. Then it judges the result from what the platform and the mail server recorded, not from
dunlink's own tables, because a pipeline that lost or doubled an effect would also misreport it. Only the
"nothing stuck" check reads the database, since a case's state is not visible anywhere else.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: every 'dunlink' command builds this parser, few run the soak
    from adapters.email.capture import MailCatcher, ReceivedMail
    from workers.processes import ProcessGroup

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
VENDOR_SLUGS = ("acme", "globex", "initech", "umbrella", "hooli", "wonka", "stark", "wayne")
WAITING = frozenset({"awaiting_payment", "needs_person"})
ENDS = frozenset({"recovered", "resolved", "lost"})
PAID_AFTER_CANCEL = "paid on a cancelled order"
FAULTS = {"error_rate": 0.20, "error_status": 503, "timeout_rate": 0.05, "rate_limit_rate": 0.05,
          "retry_after_s": 1}
DUPLICATE_SHARE = 0.20
RACE_SHARE = 0.15
PAY_REPLACEMENT_SHARE = 0.20
REDELIVERY_LIMIT = 10  # CopeCart retries an IPN 10 times before giving up
CHECK_NAMES = (
    "every IPN answered OK is reflected",
    "at most one replacement per original (GET /sandbox/orders?replaces=)",
    "each original cancelled by at most one effective call",
    "no original and replacement both active for one case",
    "one payment-link email per case (by Message-ID)",
    "no case stuck outside an end or waiting state",
)
_LINK_ID = re.compile(r"<dunlink\.([^.>]+)\.send_link@[^>]+>")


class Plan(StrEnum):
    """What the soak does to an order besides failing one of its installments."""

    PLAIN = "plain"
    RACE = "race"  # the failed installment is paid on the original shortly after the failure
    PAYS_REPLACEMENT = "pays_replacement"  # the buyer pays the replacement once the link email arrived


@dataclass
class SoakOrder:
    order_id: str
    vendor: str
    amounts: tuple[int, ...]
    paid: int
    plan: Plan
    email: str
    first_name: str
    pending: int = 0  # actions of the soak's own still to happen for this order
    fed: bool = False
    replacement_paid: str | None = None

    @property
    def failed(self) -> int:
        return self.paid + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.order_id, "vendor": self.vendor, "status": "active",
            "product": {"id": f"p-{self.vendor}-{len(self.amounts)}", "name": "Soak Course"},
            "buyer": {"id": f"b-{self.order_id.lower()}", "email": self.email, "first_name": self.first_name,
                      "last_name": "Probe", "country_code": "DE"},
            "currency": "EUR",
            "plan": {"kind": "installments", "frequency": "monthly", "installments": [
                {"number": n, "amount": amount, "due_date": f"{2026 + (n + 5) // 12}-{(n + 5) % 12 + 1:02d}-01",
                 "status": "paid" if n <= self.paid else "open"} for n, amount in enumerate(self.amounts, 1)]},
            "replaces": None,
        }


@dataclass(frozen=True)
class SoakOptions:
    cases: int = 2000
    vendors: int = 3
    workers: int = 2
    concurrency: int = 4
    kills: int = 2
    database_url: str | None = None
    postgres: str = DEFAULT_POSTGRES
    seed: int = 1
    report: Path | None = None
    deadline: float | None = None  # 600 s plus 0.1 s per case
    window: int = 80
    lost_answers: float = 0.0
    folder: Path = Path("var/soak")

    @property
    def time_allowed(self) -> float:
        return self.deadline if self.deadline is not None else 600.0 + 0.1 * self.cases


# -- the scenario ----------------------------------------------------------------------------------------------


def vendors_toml(count: int) -> str:
    """Vendors alternating language and replacement kind, so both email locales and both plans are exercised."""
    blocks = []
    for index in range(count):
        slug = VENDOR_SLUGS[index] if index < len(VENDOR_SLUGS) else f"vendor{index + 1}"
        blocks.append(f"""[vendors.{slug}]
name = "{slug.capitalize()} Academy"
summary_email = "owner@{slug}.example"
locale = "{'de' if index % 2 == 0 else 'en'}"
timezone = "Europe/Berlin"
copecart_ipn_secret = "soak-secret-{slug}"
replacement = "{'remaining_installments' if index % 2 == 0 else 'single_payment'}"
reminder_days = [3, 7]
expire_after_days = 14
""")
    return "\n".join(blocks)


def vendor_slugs(count: int) -> list[str]:
    return [VENDOR_SLUGS[i] if i < len(VENDOR_SLUGS) else f"vendor{i + 1}" for i in range(count)]


def make_orders(options: SoakOptions, rng: random.Random, tag: str) -> list[SoakOrder]:
    """N installment orders; half the races fail the last installment, so paying it completes the original."""
    slugs = vendor_slugs(options.vendors)
    names = ("Anna", "Jürgen", "Zoë", "Chloé", "Oskar", "Maëlle", "Lena", "Ömer")
    orders = []
    for number in range(1, options.cases + 1):
        count = rng.randint(3, 12)
        amounts = tuple([rng.choice((1990, 4900, 9900, 14900))] * count)
        roll = rng.random()
        plan = Plan.RACE if roll < RACE_SHARE else (
            Plan.PAYS_REPLACEMENT if roll < RACE_SHARE + PAY_REPLACEMENT_SHARE else Plan.PLAIN)
        paid = count - 1 if plan is Plan.RACE and rng.random() < 0.5 else rng.randint(1, count - 1)
        order_id = f"SK{tag}-{number:05d}"
        orders.append(SoakOrder(order_id, slugs[number % len(slugs)], amounts, paid, plan,
                                f"{order_id.lower()}@buyers.soak.example", rng.choice(names)))
    return orders


# -- what the soak runs on -------------------------------------------------------------------------------------


class OwnRedis:
    """A ``redis-server`` child on a free port without persistence, so a restart loses every queued message:
    the machine's own Redis is never touched, and the relay has to prove it finds the lost work."""

    def __init__(self, folder: Path) -> None:
        from workers.processes import free_port

        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH; the soak runs a Redis of its own")
        with (self.folder / "redis.log").open("ab") as log:
            self._popen = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.folder)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with suppress(redis.RedisError), redis.Redis(port=self.port, socket_timeout=1) as client:
                if client.ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 10s")

    def stop(self) -> None:
        if self._popen is None:
            return
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout=5)
        self._popen = None


class LostAnswers:
    """A pass-through in front of the sandbox's ``/v1`` API that drops the answer to some writes after the
    platform acted on them, as a cut connection or a proxy timeout does in production: the case cannot
    know whether its order was made or its cancel took effect. The sandbox's own faults always answer
    before any effect, so without this the soak never sees that half of the platform's failures.

    A drop starts a short blackout (``BLACKOUT_S``) in which every successful write loses its answer: the
    platform client's quick in-place retries would otherwise replay the key at once and hide the loss,
    which is exactly what a partition lasting a moment does not allow."""

    BLACKOUT_S = 1.5

    def __init__(self, upstream: str, *, rate: float, seed: int) -> None:
        self.upstream, self.rate = upstream, rate
        self.dropped: list[str] = []
        self._rng = random.Random(seed)
        self._server: Any = None
        self._dark_until = 0.0

    def start(self) -> str:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import httpx

        client = httpx.Client(base_url=self.upstream, timeout=httpx.Timeout(3.0, connect=3.0))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # Host passes through so the platform's payment_url names the address dunlink calls.
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("host", "authorization", "idempotency-key", "content-type", "accept")}
                try:
                    answer = client.request(self.command, self.path, content=body, headers=headers)
                except httpx.HTTPError:
                    self.close_connection = True  # the sandbox held it (a timeout fault): so does the proxy
                    return
                if self.command == "POST" and answer.status_code < 300 and proxy.drop():
                    proxy.dropped.append(f"{self.command} {self.path} {self.headers.get('Idempotency-Key')}")
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for key in ("Content-Type", "Retry-After"):
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up after its timeout is the expected case here, not news

        server = Server(("127.0.0.1", 0), Handler)
        self._server = server
        threading.Thread(target=server.serve_forever, name="lost-answers", daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    def drop(self) -> bool:
        now = time.monotonic()
        if now < self._dark_until:
            return True
        if self._rng.random() < self.rate:
            self._dark_until = now + self.BLACKOUT_S
            return True
        return False

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def throwaway_database(options: SoakOptions) -> Iterator[str]:
    """The given database, or a new PostgreSQL database on the local server, dropped afterwards."""
    from adapters.db.migrate import upgrade

    if options.database_url:
        upgrade(options.database_url)
        yield options.database_url
        return
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(options.postgres)
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"dunlink_soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- driving ---------------------------------------------------------------------------------------------------


@dataclass(order=True)
class _Action:
    due: float
    seq: int
    kind: str = field(compare=False)
    order_id: str = field(compare=False)
    args: dict[str, Any] = field(compare=False, default_factory=dict)


@dataclass
class Tally:
    """What happened during the run, for the summary and the report."""

    fails_sent: int = 0
    duplicates_sent: int = 0
    redeliveries: int = 0
    race_pays: int = 0
    replacement_pays: int = 0
    kills: list[float] = field(default_factory=list)
    redis_restarted_at: float | None = None
    first_fail_at: float | None = None
    last_fail_at: float | None = None
    drained_at: float | None = None
    harness_errors: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)  # processes that ended without being killed


class Soak:
    def __init__(self, options: SoakOptions, *, run: Path, database_url: str, redis: OwnRedis,
                 mail: MailCatcher, group: ProcessGroup, sandbox: str, api: str,
                 lost_answers: list[str] | None = None) -> None:
        import httpx

        self.options, self.run, self.database_url = options, run, database_url
        self.redis, self.mail, self.group, self.sandbox, self.api = redis, mail, group, sandbox, api
        self.rng = random.Random(options.seed)
        self.tag = uuid.uuid4().hex[:4]
        self.orders = {o.order_id: o for o in make_orders(options, self.rng, self.tag)}
        self.replacement_of: dict[str, str] = {}
        self.lost_answers = lost_answers if lost_answers is not None else []
        self.accepted: set[str] = set()  # transaction ids answered 200 OK at least once
        self.ipns: dict[str, dict[str, Any]] = {}
        self.states: dict[str, tuple[str, str | None, str]] = {}  # order -> (state, reason, case id)
        self.case_rows: list[tuple[str, str, str | None, str]] = []
        self.started_load = 0.0
        self.inbox_pending = 0
        self.tally = Tally()
        self.started = time.monotonic()
        self._actions: list[_Action] = []
        self._seq = itertools.count()
        self._running: list[tuple[Future[None], _Action]] = []
        self._ipn_seen = 0
        self._mail_seen = 0
        self._worker_generation = itertools.count(1)
        self._worker_names: dict[str, str] = {}
        self._http = httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0),
                                  limits=httpx.Limits(max_connections=16))
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="soak")

    # -- processes --------------------------------------------------------------------------------------------

    def start_worker(self, slot: int, *, wait: bool) -> None:
        from workers.processes import log_ready

        name = f"soak{slot}-{next(self._worker_generation)}"
        process = self.group.start(f"worker{slot}", ["worker", "-n", f"{name}@%h", "-c",
                                                     str(self.options.concurrency), "--without-gossip",
                                                     "--without-mingle"])
        self._worker_names[f"worker{slot}"] = name
        if wait:
            self.group.wait(process, log_ready("ready."), timeout=90)

    def _ready_workers(self) -> list[str]:
        """Workers up and consuming: a kill during start-up would test Celery's boot, not dunlink."""
        ready = []
        for slot, process in self.group.processes.items():
            name = self._worker_names.get(slot)
            if name and process.alive() and re.search(rf"\b{name}@\S+ ready\.", process.log_text()):
                ready.append(slot)
        return sorted(ready)

    def kill_worker(self) -> bool:
        """SIGKILL a random ready worker (its pool children too) and restart it shortly; False if none is ready."""
        ready = self._ready_workers()
        if not ready:
            return False
        name = self.rng.choice(ready)
        process = self.group.processes[name]
        process.kill(signal.SIGKILL)
        process.popen.wait(timeout=10)
        self.group.processes.pop(name)
        self.tally.kills.append(self.elapsed)
        self._say(f"  [{self.elapsed:6.1f}s] SIGKILL {name} (pid {process.popen.pid}); restarting it")
        self._schedule("start_worker", name, self.rng.uniform(0.0, 2.0))
        return True

    def restart_redis(self) -> None:
        self.redis.stop()
        time.sleep(1.0)
        self.redis.start()
        self.tally.redis_restarted_at = self.elapsed
        self._say(f"  [{self.elapsed:6.1f}s] Redis restarted (every queued wake-up lost)")

    # -- the platform and the webhook app ---------------------------------------------------------------------

    def seed_orders(self) -> None:
        def seed(order: SoakOrder) -> None:
            self._http.post(f"{self.sandbox}/sandbox/orders", json=order.to_json()).raise_for_status()

        list(self._pool.map(seed, self.orders.values()))
        self._http.put(f"{self.sandbox}/sandbox/faults", json={**FAULTS, "seed": self.options.seed}
                       ).raise_for_status()

    def _installment(self, order_id: str, number: int, action: str) -> dict[str, Any]:
        response = self._http.post(f"{self.sandbox}/sandbox/orders/{order_id}/installments/{number}/{action}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def _deliver(self, entry: dict[str, Any]) -> bool:
        import httpx

        try:
            response = self._http.post(entry["url"], content=entry["body"].encode("utf-8"), headers={
                "X-Copecart-Signature": entry["signature"], "Content-Type": "application/json"})
        except httpx.HTTPError:
            return False
        if response.status_code == 200 and response.text == "OK":
            self.accepted.add(entry["transaction_id"])
            return True
        return False

    def _perform(self, action: _Action) -> None:
        order = self.orders[action.order_id]
        if action.kind == "fail":
            self._installment(order.order_id, order.failed, "fail")
            self.tally.fails_sent += 1
        elif action.kind == "race_pay":
            self._installment(order.order_id, order.failed, "pay")
            self.tally.race_pays += 1
        elif action.kind == "pay_replacement":
            self._installment(action.args["replacement"], 1, "pay")
            self.tally.replacement_pays += 1
        elif action.kind in ("duplicate", "redeliver"):
            entry = self.ipns[action.args["transaction_id"]]
            delivered = self._deliver(entry)
            if action.kind == "duplicate":
                self.tally.duplicates_sent += 1
            else:
                self.tally.redeliveries += 1
                attempt = int(action.args["attempt"])
                if not delivered and entry["transaction_id"] not in self.accepted:
                    if attempt >= REDELIVERY_LIMIT:
                        self.tally.harness_errors.append(
                            f"IPN {entry['transaction_id']} ({entry['event_type']} on {entry['order_id']}) "
                            f"never answered OK in {REDELIVERY_LIMIT} deliveries")
                    else:
                        self._schedule("redeliver", order.order_id, min(2.0 ** attempt, 8.0),
                                       transaction_id=entry["transaction_id"], attempt=attempt + 1)

    def _schedule(self, kind: str, order_id: str, delay: float, **args: Any) -> None:
        if order_id in self.orders:
            self.orders[order_id].pending += 1
        heapq.heappush(self._actions, _Action(time.monotonic() + delay, next(self._seq), kind, order_id, args))

    def _supervise(self) -> None:
        """Restart a dunlink process that ended on its own, as the compose file's ``restart: unless-stopped``
        does in production, and note it: the pipeline must survive that too, but a crash is worth knowing."""
        for name, process in list(self.group.processes.items()):
            if process.alive():
                continue
            code = process.popen.wait()
            last = next((line for line in reversed(process.log_text().splitlines())
                         if '"level": "critical"' in line or '"level": "error"' in line), "")
            why = re.search(r'"event": "([^"]{0,160})', last)
            note = f"{name} exited with code {code} at {self.elapsed:.1f}s" + (f": {why.group(1)}" if why else "")
            self.tally.exits.append(note)
            self._say(f"  [{self.elapsed:6.1f}s] {note}; restarting it")
            self.group.processes.pop(name)
            if name == "sandbox":
                raise RuntimeError(f"the sandbox exited (code {code}): its orders and logs are gone")
            if name.startswith("worker"):
                self._schedule("start_worker", name, 1.0)
            else:
                self.group.start(name, process.args)

    def _submit_due(self) -> None:
        now = time.monotonic()
        while self._actions and self._actions[0].due <= now:
            action = heapq.heappop(self._actions)
            if action.kind == "start_worker":
                self.start_worker(int(action.order_id.removeprefix("worker")), wait=False)
                continue
            self._running.append((self._pool.submit(self._perform, action), action))

    def _collect(self) -> None:
        still: list[tuple[Future[None], _Action]] = []
        for future, action in self._running:
            if not future.done():
                still.append((future, action))
                continue
            order = self.orders[action.order_id]
            error = future.exception()
            if error is not None:
                self.tally.harness_errors.append(f"{action.kind} on {action.order_id}: {type(error).__name__}: "
                                                 f"{error}")
            elif action.kind == "fail":
                if self.tally.first_fail_at is None:
                    self.tally.first_fail_at = self.elapsed
                self.tally.last_fail_at = self.elapsed
                if order.plan is Plan.RACE:
                    self._schedule("race_pay", order.order_id, self.rng.uniform(0.05, 2.5))
            order.pending -= 1
        self._running = still

    def _poll_ipns(self) -> None:
        """Read what the sandbox delivered: re-send refused ones as CopeCart would, and some as duplicates."""
        entries: list[dict[str, Any]] = self._http.get(f"{self.sandbox}/sandbox/ipns").json()
        for entry in entries[self._ipn_seen:]:
            tx = entry["transaction_id"]
            self.ipns[tx] = entry
            original = self.replacement_of.get(entry["order_id"], entry["order_id"])
            if entry["status"] == 200:
                self.accepted.add(tx)
            else:
                self._schedule("redeliver", original, 1.0, transaction_id=tx, attempt=1)
            if self.rng.random() < DUPLICATE_SHARE:
                for _ in range(self.rng.randint(1, 3)):
                    self._schedule("duplicate", original, self.rng.uniform(0.0, 1.5), transaction_id=tx)
        self._ipn_seen = len(entries)

    def _poll_mail(self) -> None:
        """Pay some replacements once their payment link reached the buyer, as a buyer would."""
        messages = self.mail.messages
        for mail in messages[self._mail_seen:]:
            if not _LINK_ID.fullmatch(str(mail.message.get("Message-ID", ""))):
                continue
            order = self.orders.get(_order_of(mail, self.tag))
            link = re.search(r"http://127\.0\.0\.1:\d+/pay/([A-Za-z0-9-]+)", mail.text)
            if order is None or link is None or order.plan is not Plan.PAYS_REPLACEMENT or order.replacement_paid:
                continue
            order.replacement_paid = link.group(1)
            self.replacement_of[link.group(1)] = order.order_id
            self._schedule("pay_replacement", order.order_id, self.rng.uniform(0.0, 1.0), replacement=link.group(1))
        self._mail_seen = len(messages)

    def _poll_database(self) -> None:
        from sqlalchemy import func, select

        from adapters.db.tables import CaseRow, InboxEvent

        with self._engine.connect() as connection:
            rows = connection.execute(select(CaseRow.original_order_id, CaseRow.state, CaseRow.reason, CaseRow.id)
                                      .where(CaseRow.original_order_id.like(f"SK{self.tag}-%"))
                                      .order_by(CaseRow.opened_at)).all()
            self.inbox_pending = int(connection.execute(
                select(func.count()).select_from(InboxEvent).where(InboxEvent.processed_at.is_(None))).scalar_one())
        self.case_rows = [(str(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]
        self.states = {order_id: (state, reason, case_id) for order_id, state, reason, case_id in self.case_rows}

    def settled(self, order: SoakOrder) -> bool:
        if not order.fed or order.pending:
            return False
        state = self.states.get(order.order_id, ("", None, ""))[0]
        if order.plan is Plan.PAYS_REPLACEMENT:
            return state in ENDS or state == "needs_person"
        return state in ENDS or state in WAITING

    # -- the run ----------------------------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _say(self, line: str) -> None:
        print(line, flush=True)

    def drive(self) -> bool:
        """Feed the failures, inject the chaos and wait until everything settled; False at the deadline."""
        from adapters.db.engine import make_engine

        self._engine = make_engine(self.database_url, pool_size=1)
        total = len(self.orders)
        feed = iter(self.orders.values())
        # Chaos at random points of the work done (cases settled), so it lands while cases are mid-flight.
        kill_marks = sorted(self.rng.uniform(0.05, 0.85) for _ in range(self.options.kills))
        redis_mark = self.rng.uniform(0.35, 0.65)
        fed = settled = 0
        last_db = last_ipns = last_progress = 0.0
        tty = sys.stdout.isatty()
        deadline = self.started + self.options.time_allowed
        try:
            while time.monotonic() < deadline:
                now = time.monotonic()
                self._collect()
                if now - last_db >= 0.5:
                    self._supervise()
                    self._poll_database()
                    last_db = now
                    settled = sum(1 for o in self.orders.values() if self.settled(o))
                while fed < total and fed - settled < self.options.window:
                    order = next(feed)
                    order.fed = True
                    fed += 1
                    self._schedule("fail", order.order_id, 0.0)
                if kill_marks and settled >= kill_marks[0] * total and self.kill_worker():
                    kill_marks.pop(0)
                if self.tally.redis_restarted_at is None and settled >= redis_mark * total:
                    self.restart_redis()
                self._submit_due()
                if now - last_ipns >= 3.0:
                    self._poll_ipns()
                    last_ipns = now
                self._poll_mail()
                if now - last_progress >= (1.0 if tty else 10.0):
                    line = (f"  soak: {settled}/{total} cases settled, {fed}/{total} fed, elapsed "
                            f"{self.elapsed:.0f}s, kills {len(self.tally.kills)}/{self.options.kills}, "
                            f"inbox pending {self.inbox_pending}")
                    print(f"\r{line}  " if tty else line, end="" if tty else "\n", flush=True)
                    last_progress = now
                if settled == total and not self._actions and not self._running and self.inbox_pending == 0:
                    self._poll_ipns()  # anything delivered since the last look may still need duplicates
                    last_ipns = now
                    if not self._actions:
                        self.tally.drained_at = self.elapsed
                        if tty:
                            print(flush=True)
                        return True
                time.sleep(0.15)
            if tty:
                print(flush=True)
            return False
        finally:
            for future, _ in self._running:
                future.cancel()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.dispose()

    # -- what the outside world recorded ----------------------------------------------------------------------

    def write_evidence(self, checks: list[Check], records: Records) -> None:
        """For each case named in a violation, its timeline and the platform calls made for it, kept in the run
        folder: the throwaway database is dropped when the soak ends, and a violation needs explaining."""
        from adapters.db.engine import make_session_factory
        from adapters.db.uow import SqlUnitOfWork

        problems = [problem for c in checks for problem in c.problems]
        case_ids = sorted({found for problem in problems for found in re.findall(r"\b[0-9a-f]{16}\b", problem)})
        by_case = {case_id: order_id for order_id, _, _, case_id in records.case_rows}
        lines: list[str] = []
        with SqlUnitOfWork(make_session_factory(self._engine)) as uow:
            for case_id in case_ids[:200]:
                order_id = by_case.get(case_id, "?")
                replacement = ", ".join(o["id"] for o in records.orders.values() if o.get("replaces") == order_id)
                plan = self.orders[order_id].plan.value if order_id in self.orders else "?"
                lines.append(f"case {case_id}: original {order_id} ({plan}), replacements: {replacement or 'none'}")
                for event in uow.cases.timeline(case_id):
                    lines.append(f"  {event.at.isoformat(timespec='milliseconds')}  {event.kind}  "
                                 f"{json.dumps(event.detail, sort_keys=True)}")
                for request in records.requests:
                    if case_id in str(request.get("idempotency_key")) or request["path"].startswith(
                            f"/v1/orders/{order_id}"):
                        outcome = request.get("effect") or request.get("fault") or ""
                        lines.append(f"  platform: {request['method']} {request['path']} "
                                     f"key={request['idempotency_key']} -> {request['status']} {outcome}")
                lost = [d for d in self.lost_answers if case_id in d]
                lines.extend(f"  answer lost: {d}" for d in lost)
        path = self.run / "evidence.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"evidence (case timelines and platform calls of each violation): {path}", flush=True)

    def records(self) -> Records:
        """The platform's and the mail server's records, with the case states for the stuck check."""
        orders: list[dict[str, Any]] = self._http.get(f"{self.sandbox}/sandbox/orders").json()
        requests: list[dict[str, Any]] = self._http.get(f"{self.sandbox}/sandbox/requests").json()
        self._poll_database()
        return Records(tag=self.tag, orders={o["id"]: o for o in orders}, requests=requests,
                       ipns=list(self.ipns.values()), accepted=set(self.accepted), mails=self.mail.messages,
                       case_rows=list(self.case_rows))


def _order_of(mail: ReceivedMail, tag: str) -> str:
    """The original order a buyer email belongs to: each soak buyer has an address of their own."""
    for address in mail.rcpt_tos:
        local = address.partition("@")[0]
        if local.startswith(f"sk{tag}-"):
            return "SK" + local[2:]
    return ""


# -- checks ----------------------------------------------------------------------------------------------------


@dataclass
class Records:
    tag: str
    orders: dict[str, dict[str, Any]]
    requests: list[dict[str, Any]]
    ipns: list[dict[str, Any]]
    accepted: set[str]
    mails: list[ReceivedMail]
    case_rows: list[tuple[str, str, str | None, str]]


@dataclass
class Check:
    name: str
    summary: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check(plans: dict[str, SoakOrder], records: Records) -> list[Check]:
    """Judge the run from the sandbox's orders, request log and IPN log and the mail catcher's messages."""
    cases: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
    for order_id, state, reason, case_id in records.case_rows:
        cases[order_id].append((case_id, state, reason))

    def who(order_id: str) -> str:
        ids = ",".join(c[0] for c in cases.get(order_id, [])) or "none"
        return f"order {order_id} (case {ids})"

    replacements: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in records.orders.values():
        if order.get("replaces"):
            replacements[order["replaces"]].append(order)
    live = ("active", "completed")

    # Every accepted IPN reflected on the platform.
    reflected = Check(CHECK_NAMES[0], "")
    outcomes: Counter[str] = Counter()
    failed_ok = {e["order_id"] for e in records.ipns
                 if e["event_type"] == "payment.failed" and e["transaction_id"] in records.accepted}
    for e in records.ipns:
        if e["transaction_id"] not in records.accepted:
            reflected.problems.append(f"IPN {e['transaction_id']} ({e['event_type']} on {e['order_id']}) "
                                      "never answered OK")
    for order_id, plan in sorted(plans.items()):
        if order_id not in failed_ok:
            reflected.problems.append(f"{who(order_id)}: its payment.failed IPN was never accepted")
            continue
        original = records.orders[order_id]
        mine = replacements.get(order_id, [])
        active = [r for r in mine if r["status"] in live]
        if original["status"] == "cancelled":
            if not active:
                reflected.problems.append(f"{who(order_id)}: original cancelled but no replacement to pay")
            outcomes["replaced"] += 1
        elif active:
            outcomes["both active"] += 1  # reported by its own check
        elif plan.plan is Plan.RACE:
            outcomes["kept (paid in the race)" if not mine else "kept, replacement withdrawn"] += 1
        else:
            reflected.problems.append(f"{who(order_id)}: installment failed and was never paid, yet the original "
                                      f"is {original['status']} without a replacement")
    for replacement, original_id in ((r, o.order_id) for o in plans.values() if (r := o.replacement_paid)):
        if records.orders.get(replacement, {}).get("status") == "cancelled":
            reflected.problems.append(f"{who(original_id)}: the replacement {replacement} was paid, then cancelled")
    reflected.summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) or "nothing"

    # At most one replacement per original.
    single = Check(CHECK_NAMES[1],
                   f"{sum(len(v) for v in replacements.values())} replacements for {len(replacements)} originals")
    for order_id, mine in sorted(replacements.items()):
        if len(mine) > 1:
            single.problems.append(f"{who(order_id)}: {len(mine)} replacements {', '.join(r['id'] for r in mine)}")

    # One effective cancel per order.
    cancels: Counter[str] = Counter(r["path"].split("/")[3] for r in records.requests
                                    if r.get("effect") == "cancelled")
    replays = sum(1 for r in records.requests if r.get("effect") in ("replayed", "already_cancelled")
                  and r["path"].endswith("/cancel"))
    withdrawn = sum(1 for order_id in cancels if order_id not in plans)
    once = Check(CHECK_NAMES[2],
                 f"{len(cancels) - withdrawn} originals and {withdrawn} replacements cancelled, "
                 f"{replays} repeated cancels without effect")
    for order_id, count in sorted(cancels.items()):
        if count > 1:
            once.problems.append(f"{who(records.orders.get(order_id, {}).get('replaces') or order_id)}: "
                                 f"{order_id} cancelled by {count} effective calls")

    # Never both open.
    both = Check(CHECK_NAMES[3], "")
    for order_id in sorted(plans):
        original = records.orders[order_id]
        open_ids = [r["id"] for r in replacements.get(order_id, []) if r["status"] in live]
        if original["status"] in live and open_ids:
            both.problems.append(f"{who(order_id)}: original {original['status']} and replacement "
                                 f"{', '.join(open_ids)} active")
    both.summary = f"{len(both.problems)} of {len(plans)}"

    # One payment-link email per case.
    link_ids: dict[str, set[str]] = defaultdict(set)
    copies: Counter[str] = Counter()
    emails = Check(CHECK_NAMES[4], "")
    for mail in records.mails:
        found = _LINK_ID.fullmatch(str(mail.message.get("Message-ID", "")))
        if found:
            order_id = _order_of(mail, records.tag)
            link_ids[order_id].add(found.group(1))
            copies[str(mail.message["Message-ID"])] += 1
            if str(mail.message.get("X-Dunlink-Case")) != found.group(1):
                emails.problems.append(f"{who(order_id)}: Message-ID names case {found.group(1)}, X-Dunlink-Case "
                                       f"{mail.message.get('X-Dunlink-Case')}")
    emails.summary = f"{len(copies)} link emails, {sum(n - 1 for n in copies.values())} identical resends"
    for order_id, plan in sorted(plans.items()):
        ids = link_ids.get(order_id, set())
        original = records.orders[order_id]
        active = [r for r in replacements.get(order_id, []) if r["status"] in live]
        if len(ids) > 1:
            emails.problems.append(f"{who(order_id)}: {len(ids)} payment-link emails for cases {sorted(ids)}")
        elif ids and not active:
            emails.problems.append(f"{who(order_id)}: a payment link was sent but no replacement is payable")
        elif not ids and original["status"] == "cancelled" and plan.plan is not Plan.RACE:
            emails.problems.append(f"{who(order_id)}: original cancelled, replacement made, no link email")

    # Nothing stuck (dunlink's database: a case's state is not visible elsewhere).
    states: Counter[str] = Counter()
    stuck = Check(CHECK_NAMES[5], "")
    for order_id, plan in sorted(plans.items()):
        opened = cases.get(order_id, [])
        if len(opened) != 1:
            stuck.problems.append(f"{who(order_id)}: {len(opened)} cases")
            continue
        _, state, reason = opened[0]
        states[state] += 1
        if state not in ENDS | WAITING:
            stuck.problems.append(f"{who(order_id)}: stuck in {state}")
        elif state == "needs_person" and not (plan.plan is Plan.RACE and PAID_AFTER_CANCEL in (reason or "")):
            stuck.problems.append(f"{who(order_id)}: handed to a person without cause: {reason}")
        elif plan.plan is Plan.PAYS_REPLACEMENT and state != "recovered":
            stuck.problems.append(f"{who(order_id)}: replacement paid, case {state}")
    stuck.summary = ", ".join(f"{state} {n}" for state, n in sorted(states.items()))
    return [reflected, single, once, both, emails, stuck]


# -- the command -----------------------------------------------------------------------------------------------


def run_soak(options: SoakOptions) -> int:
    """Run the soak in a new folder under ``options.folder``; 0 when every check passed.

    Whatever happens (a failed check, the deadline, Ctrl-C or SIGTERM), everything started is stopped and the
    throwaway database dropped, in the reverse order of starting.
    """
    from adapters.email.capture import MailCatcher
    from workers.processes import ProcessGroup, free_port

    run = options.folder.resolve() / datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S-%f")
    run.mkdir(parents=True)
    slugs = vendor_slugs(options.vendors)
    (run / "vendors.toml").write_text(vendors_toml(options.vendors), encoding="utf-8")
    print(f"dunlink soak: {options.cases} failed installments, {len(slugs)} vendors ({', '.join(slugs)}), "
          f"{options.workers} workers, {options.kills} kills, seed {options.seed}; working in {run}", flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            database_url = stack.enter_context(throwaway_database(options))
            mail = stack.enter_context(MailCatcher(run / "mail"))
            redis = OwnRedis(run)
            stack.callback(redis.stop)
            redis.start()
            api_port, sandbox_port = free_port(), free_port()
            api, sandbox = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{sandbox_port}"
            lossy = LostAnswers(sandbox, rate=options.lost_answers, seed=options.seed)
            stack.callback(lossy.stop)
            env = {**os.environ, "DUNLINK_DATABASE_URL": database_url, "DUNLINK_BROKER_URL": redis.url,
                   "DUNLINK_VENDORS_FILE": str(run / "vendors.toml"),
                   "DUNLINK_PLATFORM_URL": lossy.start() if lossy.rate else sandbox,
                   "DUNLINK_PLATFORM_TOKEN": "sandbox-token", "DUNLINK_SMTP_URL": f"smtp://127.0.0.1:{mail.port}",
                   "DUNLINK_MAIL_FROM": "dunning@soak.example", "DUNLINK_VENDOR_SUMMARIES": "false",
                   "DUNLINK_PLATFORM_TIMEOUT": "1",
                   "DUNLINK_LEASE_SECONDS": "6"}
            group = stack.enter_context(ProcessGroup(env=env, log_dir=run / "logs", cwd=run))
            soak = Soak(options, run=run, database_url=database_url, redis=redis, mail=mail, group=group,
                        sandbox=sandbox, api=api, lost_answers=lossy.dropped)
            stack.callback(soak.close)
            stack.callback(_terminate_all, group)
            return _run(soak, group, api_port, sandbox_port)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate_all(group: ProcessGroup) -> None:
    """SIGTERM every process at once before the group stops them one by one: each takes a moment to wind down."""
    for process in group.processes.values():
        process.kill(signal.SIGTERM)


def _run(soak: Soak, group: ProcessGroup, api_port: int, sandbox_port: int) -> int:
    from workers.processes import http_ready, log_ready

    options = soak.options
    group.start("sandbox", ["sandbox", "--port", str(sandbox_port), "--webhook-base", soak.api])
    group.start("api", ["api", "--port", str(api_port)])
    for slot in range(1, options.workers + 1):
        soak.start_worker(slot, wait=False)
    group.start("beat", ["beat", "-s", str(soak.run / "beat-schedule")])
    group.wait(group.processes["sandbox"], http_ready(f"{soak.sandbox}/sandbox/requests"), timeout=90)
    group.wait(group.processes["api"], http_ready(f"{soak.api}/healthz"), timeout=90)
    for slot in range(1, options.workers + 1):
        group.wait(group.processes[f"worker{slot}"], log_ready("ready."), timeout=90)
    group.wait(group.processes["beat"], log_ready("beat: Starting"), timeout=90)
    soak.seed_orders()
    print(f"  processes up in {soak.elapsed:.1f}s, {len(soak.orders)} orders seeded; sandbox faults "
          f"{FAULTS['error_rate']:.0%} 503, {FAULTS['timeout_rate']:.0%} timeouts, "
          f"{FAULTS['rate_limit_rate']:.0%} 429", flush=True)
    soak.started_load = soak.elapsed
    drained = soak.drive()
    records = soak.records()
    checks = check(soak.orders, records)
    if not drained:
        checks.insert(0, Check("drained before the deadline", "", [
            f"{who}: not settled (state {soak.states.get(o.order_id, ('no case',))[0]}, "
            f"{o.pending} soak actions pending)" for who, o in sorted(soak.orders.items()) if not soak.settled(o)]
            or ["work still pending at the deadline"]))
    if soak.tally.harness_errors:
        checks.insert(0, Check("the soak's own calls succeeded", "", soak.tally.harness_errors))
    if not all(c.ok for c in checks):
        soak.write_evidence(checks, records)
    return _report(soak, records, checks)


def _report(soak: Soak, records: Records, checks: list[Check]) -> int:
    tally, options = soak.tally, soak.options
    load_start = tally.first_fail_at or soak.started_load
    drained = tally.drained_at
    figures: dict[str, Any] = {
        "cases": options.cases, "vendors": options.vendors, "workers": options.workers, "seed": options.seed,
        "kills": len(tally.kills), "kill_times_s": [round(t, 1) for t in tally.kills],
        "redis_restarted_at_s": round(tally.redis_restarted_at, 1) if tally.redis_restarted_at else None,
        "fails_sent": tally.fails_sent, "duplicates_sent": tally.duplicates_sent,
        "redeliveries": tally.redeliveries, "race_pays": tally.race_pays,
        "replacement_pays": tally.replacement_pays,
        "platform_calls": len(records.requests),
        "platform_faults": dict(Counter(str(r["fault"]) for r in records.requests if r.get("fault"))),
        "answers_lost_after_effect": len(soak.lost_answers),
        "exited_on_their_own": tally.exits,
        "elapsed_s": round(soak.elapsed, 1),
        "drain_s": round(drained - (tally.last_fail_at or load_start), 1) if drained else None,
        "load_to_drained_s": round(drained - load_start, 1) if drained else None,
        "cases_per_s": round(options.cases / (drained - load_start), 2) if drained and drained > load_start else None,
    }
    print("checks (from the sandbox's and the mail catcher's records; the last one from dunlink's database):")
    for item in checks:
        print(f"  {'ok  ' if item.ok else 'FAIL'}  {item.name}: {item.summary}".rstrip(": "))
        for problem in item.problems[:25]:
            print(f"          - {problem}")
        if len(item.problems) > 25:
            print(f"          ... and {len(item.problems) - 25} more")
    print(f"sent: {tally.fails_sent} failures, {tally.duplicates_sent} duplicate deliveries, "
          f"{tally.redeliveries} re-deliveries, {tally.race_pays} racing payments, "
          f"{tally.replacement_pays} replacement payments, {len(soak.lost_answers)} platform answers lost after "
          f"the effect; worker SIGKILLs {len(tally.kills)}, Redis restarts "
          f"{1 if tally.redis_restarted_at else 0}")
    if drained:
        print(f"time to drain: {figures['drain_s']}s after the last failure; {figures['load_to_drained_s']}s from "
              f"the first failure to all settled ({figures['cases_per_s']} cases/s); {figures['elapsed_s']}s in all")
    else:
        print(f"not drained within the {options.time_allowed:.0f}s deadline")
    for note in tally.exits:
        print(f"note: {note} (restarted, as a supervisor would)")
    passed = all(item.ok for item in checks)
    print("soak passed" if passed else "soak FAILED", flush=True)
    if options.report:
        options.report.parent.mkdir(parents=True, exist_ok=True)
        options.report.write_text(json.dumps({
            **figures, "passed": passed, "run": str(soak.run), "database": _database_name(soak.database_url),
            "checks": [{"name": c.name, "ok": c.ok, "summary": c.summary, "problems": c.problems} for c in checks],
        }, indent=2) + "\n", encoding="utf-8")
    return 0 if passed else 1


def _database_name(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(url).database


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return number


def _share(value: str) -> float:
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return share


def _soak(args: argparse.Namespace) -> int:
    options = SoakOptions(cases=args.cases, vendors=args.vendors, workers=args.workers,
                          concurrency=args.concurrency, kills=args.kills,
                          database_url=args.database_url, postgres=args.postgres, seed=args.seed,
                          report=args.report, deadline=args.deadline, window=args.window, folder=args.folder,
                          lost_answers=args.lost_answers)
    try:
        return run_soak(options)
    except RuntimeError as exc:
        print(f"dunlink soak: {exc}", file=sys.stderr)
        return 2


Callback = Callable[[argparse.Namespace], int]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``soak`` to the ``dunlink`` parser."""
    soak = commands.add_parser(
        "soak", help="run every process under load and faults, then check nothing was lost or done twice",
        description="Start the sandbox, the webhook app, workers, beat, a mail catcher, a Redis of its own and "
        "a throwaway PostgreSQL database; fail N installments across several vendors with 20% duplicate "
        "deliveries, payments racing the pipeline, paid replacements, sandbox faults (20% 503, 5% timeouts, "
        "5% 429), workers SIGKILLed and restarted, and Redis restarted once. Then check, from the sandbox's "
        "and the mail catcher's records: every accepted IPN reflected, at most one replacement and one "
        "effective cancel per original, never both open, one payment-link email per case by Message-ID, no "
        "case stuck. Exits 1 naming each violation, 0 when all checks pass.")
    soak.add_argument("--cases", type=_positive, default=2000, help="failed installments (default 2000)")
    soak.add_argument("--vendors", type=_positive, default=3, help="vendors the orders spread over (default 3)")
    soak.add_argument("--workers", type=_positive, default=2, help="worker processes (default 2)")
    soak.add_argument("--concurrency", type=_positive, default=4,
                      help="pool processes per worker (default 4): platform calls mostly wait on the network")
    soak.add_argument("--kills", type=int, default=2, help="workers SIGKILLed and restarted (default 2)")
    soak.add_argument("--database-url", default=None, metavar="URL",
                      help="use this database (migrated, not dropped) instead of a throwaway one")
    soak.add_argument("--postgres", default=DEFAULT_POSTGRES, metavar="URL",
                      help=f"server the throwaway database is made on (default {DEFAULT_POSTGRES})")
    soak.add_argument("--seed", type=int, default=1, help="seed of the scenario and the sandbox faults (default 1)")
    soak.add_argument("--report", type=Path, default=None, metavar="PATH", help="also write the figures and "
                      "checks as JSON here")
    soak.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                      help="stop and fail if not drained by then (default 600 plus 0.1 per case)")
    soak.add_argument("--window", type=_positive, default=80,
                      help="failed installments in flight at most, so payments race live cases (default 80)")
    soak.add_argument("--lost-answers", type=_share, default=0.0, metavar="SHARE",
                      help="also drop the answer to this share of successful platform writes after the platform "
                      "acted (a proxy in front of the sandbox), e.g. 0.03 (default 0: off)")
    soak.add_argument("--folder", type=Path, default=Path("var/soak"),
                      help="where runs (logs, emails) are kept (default var/soak)")
    soak.set_defaults(handler=_soak)
