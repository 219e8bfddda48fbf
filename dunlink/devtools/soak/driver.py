"""Driving a soak: feeding failures, duplicates, races, payments, kills and a Redis restart."""

from __future__ import annotations

import heapq
import itertools
import json
import random
import re
import signal
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import func, select

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.tables import CaseRow, InboxEvent
from adapters.db.uow import SqlUnitOfWork
from dunlink.devtools.processes import worker_command

if TYPE_CHECKING:  # imported where used: every 'dunlink' command builds this parser, few run the soak
    from adapters.email.capture import MailCatcher
    from dunlink.devtools.processes import Command, ProcessGroup


from dunlink.devtools.soak.controls import PlatformControls, buyer_of
from dunlink.devtools.soak.infra import OwnRedis
from dunlink.devtools.soak.model import (
    _LINK_ID,
    DUPLICATE_SHARE,
    ENDS,
    FAULTS,
    REDELIVERY_LIMIT,
    WAITING,
    ApiCall,
    Check,
    Plan,
    Records,
    SoakOptions,
    SoakOrder,
    ipn_key,
    make_orders,
    order_of,
    order_of_address,
)

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
    races_refused: int = 0  # Digistore24 refused the racing payment: dunlink had stopped the rebilling first
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
                 lost_answers: list[str] | None = None, calls: list[ApiCall] | None = None) -> None:

        self.options, self.run, self.database_url = options, run, database_url
        self.redis, self.mail, self.group, self.sandbox, self.api = redis, mail, group, sandbox, api
        self.rng = random.Random(options.seed)
        self.tag = uuid.uuid4().hex[:4]
        self.orders = {o.order_id: o for o in make_orders(options, self.rng, self.tag)}
        self.replacement_of: dict[str, str] = {}
        self.lost_answers = lost_answers if lost_answers is not None else []
        self.calls = calls if calls is not None else []  # Digistore24 API calls, as the pass-through saw them
        self.accepted: set[str] = set()  # IPNs (ipn_key) answered 200 OK at least once
        self.ipns: dict[str, dict[str, Any]] = {}
        self.states: dict[str, tuple[str, str | None, str]] = {}  # order -> (state, reason, case id)
        self.case_rows: list[tuple[str, str, str | None, str]] = []
        self.recovered: dict[str, int] = {}  # case id -> recovered minor units
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
        self.controls = PlatformControls(self._http, sandbox)

    # -- processes --------------------------------------------------------------------------------------------

    def worker(self, slot: int) -> tuple[str, Command]:
        """The worker of ``slot``, under a node name of its own each time it starts (a restart is a new node)."""

        name = f"soak{slot}-{next(self._worker_generation)}"
        self._worker_names[f"worker{slot}"] = name
        return f"worker{slot}", worker_command(name, concurrency=self.options.concurrency)

    def start_worker(self, slot: int, *, wait: bool) -> None:
        name, command = self.worker(slot)
        self.group.start(name, command.args, ready=command.ready if wait else None, timeout=90)

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
        list(self._pool.map(self.controls.seed, self.orders.values()))
        self._http.put(f"{self.sandbox}/sandbox/faults", json={**FAULTS, "seed": self.options.seed}
                       ).raise_for_status()

    def _deliver(self, entry: dict[str, Any]) -> bool:

        try:
            response = self.controls.deliver(entry)
        except httpx.HTTPError:
            return False
        if response.status_code == 200 and response.text == "OK":
            self.accepted.add(ipn_key(entry))
            return True
        return False

    def _perform(self, action: _Action) -> None:
        order = self.orders[action.order_id]
        if action.kind == "fail":
            self.controls.fail(order)
            self.tally.fails_sent += 1
        elif action.kind == "race_pay":
            if self.controls.pay_original(order):
                self.tally.race_pays += 1
            else:
                order.race_refused = True
                self.tally.races_refused += 1
        elif action.kind == "pay_replacement":
            paid = self.controls.pay_replacement(order, action.args["replacement"])
            self.replacement_of[paid] = order.order_id
            self.tally.replacement_pays += 1
        elif action.kind in ("duplicate", "redeliver"):
            entry = self.ipns[action.args["transaction_id"]]
            delivered = self._deliver(entry)
            if action.kind == "duplicate":
                self.tally.duplicates_sent += 1
            else:
                self.tally.redeliveries += 1
                attempt = int(action.args["attempt"])
                if not delivered and ipn_key(entry) not in self.accepted:
                    if attempt >= REDELIVERY_LIMIT:
                        self.tally.harness_errors.append(
                            f"IPN {ipn_key(entry)} ({entry['event_type']} on {entry['order_id']}) "
                            f"never answered OK in {REDELIVERY_LIMIT} deliveries")
                    else:
                        self._schedule("redeliver", order.order_id, min(2.0 ** attempt, 8.0),
                                       transaction_id=ipn_key(entry), attempt=attempt + 1)

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
        response = self._http.get(f"{self.sandbox}/sandbox/ipns", params={"after": self._ipn_seen})
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()
        for entry in entries:
            tx = ipn_key(entry)
            self.ipns[tx] = entry
            original = self._soak_order_of(entry)
            if original is None:
                self.tally.harness_errors.append(f"IPN {tx} ({entry['event_type']} on {entry['order_id']}) is "
                                                 "about no order of this soak")
                continue
            if entry["status"] == 200:
                self.accepted.add(tx)
            else:
                self._schedule("redeliver", original, 1.0, transaction_id=tx, attempt=1)
            if self.rng.random() < DUPLICATE_SHARE:
                for _ in range(self.rng.randint(1, 3)):
                    self._schedule("duplicate", original, self.rng.uniform(0.0, 1.5), transaction_id=tx)
        self._ipn_seen += len(entries)

    def _soak_order_of(self, entry: dict[str, Any]) -> str | None:
        """The soak order an IPN is about: its own, the one whose replacement it is, or, for a purchase made
        through a buy URL whose answer has not come back yet, the one of its buyer."""
        order_id = self.replacement_of.get(entry["order_id"], entry["order_id"])
        if order_id in self.orders:
            return str(order_id)
        by_buyer = order_of_address(buyer_of(entry), self.tag)
        return by_buyer if by_buyer in self.orders else None

    def _poll_mail(self) -> None:
        """Pay some replacements once their payment link reached the buyer, as a buyer would."""
        messages = self.mail.messages
        for mail in messages[self._mail_seen:]:
            if not _LINK_ID.fullmatch(str(mail.message.get("Message-ID", ""))):
                continue
            order = self.orders.get(order_of(mail, self.tag))
            link = self.controls.link_in(order, mail.text) if order is not None else None
            if order is None or link is None or order.plan is not Plan.PAYS_REPLACEMENT or order.replacement_paid:
                continue
            order.replacement_paid = link
            if not order.on_digistore24:
                self.replacement_of[link] = order.order_id
            self._schedule("pay_replacement", order.order_id, self.rng.uniform(0.0, 1.0), replacement=link)
        self._mail_seen = len(messages)

    def _poll_database(self) -> None:


        with self._engine.connect() as connection:
            rows = connection.execute(select(CaseRow.original_order_id, CaseRow.state, CaseRow.reason, CaseRow.id,
                                             CaseRow.recovered_minor)
                                      .where(CaseRow.original_order_id.like(f"SK{self.tag}-%"))
                                      .order_by(CaseRow.opened_at)).all()
            self.inbox_pending = int(connection.execute(
                select(func.count()).select_from(InboxEvent).where(InboxEvent.processed_at.is_(None))).scalar_one())
        self.case_rows = [(str(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]
        self.recovered = {str(r[3]): int(r[4] or 0) for r in rows}
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
                lost = [d for d in self.lost_answers if case_id in d and "createBuyUrl" not in d]  # shown below
                lines.extend(f"  answer lost: {d}" for d in lost)
                lines.extend(self._digistore24_evidence(records, case_id, order_id))
        path = self.run / "evidence.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"evidence (case timelines and platform calls of each violation): {path}", flush=True)

    def _digistore24_evidence(self, records: Records, case_id: str, purchase_id: str) -> list[str]:
        """A Digistore24 case's API calls (the pass-through's clock, from the soak's start), links and purchase."""
        lines = []
        for call in records.calls:
            if call.purchase_id == purchase_id or call.custom == case_id:
                answered = f"{call.answered - self.started:.2f}s" if call.answered is not None else "never"
                outcome = call.link_id or ("modified" if call.modified else "")
                lines.append(f"  digistore24: #{call.seq} {call.function} {call.purchase_id or call.custom} at "
                             f"{call.arrived - self.started:.2f}s, answered {answered}: {call.result} {outcome}"
                             f"{' (answer lost)' if call.lost else ''}")
        for link in records.links:
            if link["tracking"].get("custom") == case_id:
                lines.append(f"  buy URL {link['id']}: {json.dumps(link['payment_plan'], sort_keys=True)}, paid "
                             f"through by {link['purchases'] or 'nobody'}")
        purchase = records.purchases.get(purchase_id)
        if purchase is not None:
            lines.append(f"  purchase {purchase_id}: {purchase['billing_status']}, {purchase['payments']} payments, "
                         f"stop reason {purchase['billing_stop_reason'] or 'none'}")
        return lines

    def records(self) -> Records:
        """The platform's and the mail server's records, with the case states for the stuck check."""
        orders: list[dict[str, Any]] = self._http.get(f"{self.sandbox}/sandbox/orders").json()
        requests: list[dict[str, Any]] = self._http.get(f"{self.sandbox}/sandbox/requests").json()
        self._poll_database()
        return Records(tag=self.tag, orders={o["id"]: o for o in orders}, requests=requests,
                       ipns=list(self.ipns.values()), accepted=set(self.accepted), mails=self.mail.messages,
                       case_rows=list(self.case_rows), purchases=self.controls.purchases(),
                       links=self.controls.links(), calls=list(self.calls), recovered=dict(self.recovered))


