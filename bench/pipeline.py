"""How fast dunlink takes in IPNs and turns failed installments into payment-link emails.

Two parts, each on real processes, a fresh PostgreSQL database and a Redis database index of its own
(flushed before and after):

intake
    ``dunlink api`` (uvicorn, PostgreSQL, Redis broker, no worker consuming) beside a bare FastAPI app with
    one POST route that answers ``OK``, served by uvicorn the same way, both in subprocesses and measured in
    the same run. The load generator is ``wrk`` with a Lua script that cycles through pre-generated,
    distinctly signed IPNs (a unique transaction_id each, so every request is stored); the same requests go
    to the bare app. Afterwards the inbox rows and the queued wake-ups are counted against the answers.

e2e
    The sandbox, ``dunlink api``, Celery workers, beat and a local SMTP sink (aiosmtpd in a subprocess that
    notes each message's arrival time). ``--cases`` orders are seeded in the sandbox, then installment 3 of
    each is failed through ``POST /sandbox/orders/{id}/installments/3/fail``, which makes the sandbox sign
    and deliver the IPN to the api, as CopeCart would. Time from IPN to email = arrival at the sink minus the
    moment the fail call was made. ``burst`` sends every case as fast as ``--senders`` threads can;
    ``paced`` sends at ``--rate`` cases/s. Workers run as ``prefork`` (one ``dunlink worker -c 2``),
    ``processes`` (two ``dunlink worker -c 1``) and/or ``wide`` (two ``dunlink worker -c 3``). At the end:
    one replacement and one email per case.

    .venv/bin/python bench/pipeline.py [--cases 500] [--seconds 10] [--connections 32] [--rate 8]
        [--modes prefork,processes,wide] [--parts intake,e2e] [--profile] [--json bench/out/pipeline.json]

Logs, the wrk script and (with ``--profile``) py-spy profiles go to ``bench/out/<timestamp>/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402

from adapters.db.migrate import upgrade  # noqa: E402
from adapters.platform.port import Order  # noqa: E402
from dunlink.devtools.processes import ProcessGroup, free_port, http_ready, log_ready, serving  # noqa: E402
from dunlink.sandbox.ipn import build_ipn, sign  # noqa: E402
from tests.support.db import ADMIN_URL, database_url, drop_database  # noqa: E402
from tests.support.stack import OPS_HEADERS, OPS_TOKEN, SECRET, VENDORS, order_json  # noqa: E402

REDIS_BASE = os.environ.get("DUNLINK_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
FAILED_INSTALLMENT = 3
INTAKE_TARGET = 0.5
E2E_TARGET = 50.0

BARE_APP = """
import sys
import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI(docs_url=None, redoc_url=None)

# Registered as dunlink registers its webhook: a plain route of the FastAPI app (no parameter solving).
async def copecart(request) -> PlainTextResponse:
    return PlainTextResponse("OK")

app.add_route("/webhooks/copecart/{vendor}", copecart, methods=["POST"], include_in_schema=False)

@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""

# Each wrk thread reads its own file of "signature<TAB>body" lines and sends each line once, in order.
WRK_LUA = """
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

local sigs, bodies, next_index, wrapped = {}, {}, 1, 0
function init(args)
  for line in io.lines(os.getenv("BENCH_BODIES") .. "." .. tid) do
    local tab = string.find(line, "\\t", 1, true)
    sigs[#sigs + 1] = string.sub(line, 1, tab - 1)
    bodies[#bodies + 1] = string.sub(line, tab + 1)
  end
end

function request()
  if next_index > #bodies then
    next_index = 1
    wrapped = wrapped + 1
  end
  local i = next_index
  next_index = next_index + 1
  return wrk.format("POST", os.getenv("BENCH_PATH"),
    {["Content-Type"] = "application/json", ["X-Copecart-Signature"] = sigs[i]}, bodies[i])
end
"""

SMTP_SINK = """
import asyncio, re, sys, time
from aiosmtpd.controller import Controller

CASE = re.compile(rb"^X-Dunlink-Case:\\s*(\\S+)", re.MULTILINE | re.IGNORECASE)
out = open(sys.argv[2], "a", buffering=1)

class Sink:
    async def handle_DATA(self, server, session, envelope):
        arrived = time.time()
        found = CASE.search(envelope.original_content or b"")
        case = found.group(1).decode() if found else "-"
        out.write(f"{arrived:.6f}\\t{','.join(envelope.rcpt_tos)}\\t{case}\\n")
        return "250 Message accepted for delivery"

controller = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]), ready_timeout=10)
controller.start()
print("sink ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
"""


# -- helpers -------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; ``q`` in 0..100."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def wait_until(probe: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


@contextmanager
def fresh_database(label: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards."""
    name = f"dunlink_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin_info = ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_info, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = database_url(name)
        upgrade(url)
        yield url
    finally:
        drop_database(name)


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    info = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(info, connect_timeout=5) as connection:
        cursor = connection.execute(sql.encode(), params)
        return cursor.fetchall() if cursor.description else []


@contextmanager
def redis_database(index: int) -> Iterator[tuple[str, redis.Redis]]:
    url = f"{REDIS_BASE}/{index}"
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
    client.flushdb()
    try:
        yield url, client
    finally:
        client.flushdb()
        client.close()


@contextmanager
def subprocess_running(args: list[str], *, log_path: Path, ready: Callable[[], bool], what: str,
                       timeout: float = 30) -> Iterator[subprocess.Popen[bytes]]:
    """A helper process of the benchmark's own (bare app, SMTP sink), always stopped afterwards."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@contextmanager
def profiling(enabled: bool, pid: int, path: Path, *, seconds: float) -> Iterator[None]:
    """py-spy record (GIL holders only, so CPU) of ``pid`` and children for ``seconds``, as collapsed stacks."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not enabled:
        yield
        return
    if not Path(spy).exists():
        print("--profile: py-spy is not installed (.venv/bin/pip install -e '.[bench]'); no profile recorded",
              file=sys.stderr)
        yield
        return
    process = subprocess.Popen([spy, "record", "--pid", str(pid), "--subprocesses", "--duration",
                                str(max(1, math.ceil(seconds))), "--rate", "200", "--gil", "--format", "raw",
                                "--output", str(path), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield
    finally:
        try:
            process.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` and its (waited-for) children, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and all its live descendants (a Celery worker's pool children)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        value = cpu_seconds(current)
        total += 0.0 if math.isnan(value) else value
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with suppress(OSError):
                pending.extend(int(child) for child in task.read_text().split())
    return total


def postgres_backends(database: str) -> list[int]:
    name = database.rsplit("/", 1)[1]
    return [int(row[0]) for row in query(database, "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                                                   "AND pid <> pg_backend_pid()", (name,))]


class CpuMeter:
    """CPU seconds used by each named process tree (and the database's backends) between start and stop."""

    def __init__(self, processes: dict[str, int], database: str) -> None:
        self.processes, self.database = processes, database
        self.before: dict[str, float] = {}
        self.backend_before: dict[int, float] = {}

    def start(self) -> None:
        self.before = {name: tree_cpu_seconds(pid) for name, pid in self.processes.items()}
        self.backend_before = {pid: cpu_seconds(pid) for pid in postgres_backends(self.database)}
        self.busy = machine_busy()
        self.xacts = self._transactions()

    def _transactions(self) -> int:
        name = self.database.rsplit("/", 1)[1]
        rows = query(self.database, "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                     (name,))
        return int(rows[0][0])

    def stop(self) -> dict[str, float]:
        used = {name: tree_cpu_seconds(pid) - self.before[name] for name, pid in self.processes.items()}
        used["postgres"] = 0.0
        for pid in postgres_backends(self.database):
            now = cpu_seconds(pid)
            if not math.isnan(now):
                used["postgres"] += now - self.backend_before.get(pid, 0.0)
        busy = machine_busy()
        used["machine_busy_pct"] = 100 * (busy[0] - self.busy[0]) / max(1, busy[1] - self.busy[1])
        time.sleep(0.6)  # the statistics collector reports with a short delay
        used["transactions"] = self._transactions() - self.xacts
        return used


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, to tell how loaded it was during a measurement."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def write_vendors(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vendors.toml"
    path.write_text(VENDORS.format(secret=SECRET), encoding="utf-8")
    return path


def dunlink_env(*, database: str, broker: str, vendors: Path, smtp_port: int = 9,
                platform_url: str = "http://127.0.0.1:9") -> dict[str, str]:
    return {**os.environ, "DUNLINK_DATABASE_URL": database, "DUNLINK_BROKER_URL": broker,
            "DUNLINK_VENDORS_FILE": str(vendors), "DUNLINK_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "DUNLINK_MAIL_FROM": "dunning@dunlink.example", "DUNLINK_VENDOR_SUMMARIES": "false",
            "DUNLINK_PLATFORM_TOKEN": "sandbox-token", "DUNLINK_OPS_TOKEN": OPS_TOKEN,
            "DUNLINK_PLATFORM_URL": platform_url}


# -- intake --------------------------------------------------------------------------------------------------


def write_bodies(path: Path, *, count: int, threads: int, prefix: str) -> None:
    """``count`` distinct signed ``payment.failed`` IPNs, split over one file per wrk thread."""
    template = Order.from_json(order_json("CC-BENCH"))
    ordered_at = now = datetime.now(UTC)
    files = [path.with_name(f"{path.name}.{t}").open("w", encoding="utf-8") for t in range(threads)]
    try:
        for i in range(count):
            payload = build_ipn(template, FAILED_INSTALLMENT, action="fail", transaction_id=f"T-{prefix}-{i}",
                                ordered_at=ordered_at, now=now)
            payload["order_id"] = f"CC-{prefix}-{i}"
            body = json.dumps(payload, separators=(",", ":"))
            files[i % threads].write(f"{sign(SECRET, body.encode())}\t{body}\n")
    finally:
        for file in files:
            file.close()


def run_wrk(url: str, *, script: Path, bodies: Path, seconds: int, connections: int, threads: int
            ) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BENCH_BODIES": str(bodies),
           "BENCH_PATH": "/webhooks/copecart/acme"}
    output = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                             "--latency", "-s", str(script), url],
                            env=env, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no {label}% latency in wrk output:\n{output}")
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    if rate is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {"requests": int(total[1]), "rps": float(rate[1]), "p50_ms": latency_ms("50"),
            "p99_ms": latency_ms("99"), "non_2xx": int(non_2xx[1]) if non_2xx else 0,
            "socket_errors": socket_errors[1].strip() if socket_errors else ""}


def intake(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed for the intake part: apt-get update && apt-get install -y wrk")
    folder = out / "intake"
    script = folder / "ipn.lua"
    folder.mkdir(parents=True, exist_ok=True)
    script.write_text(WRK_LUA, encoding="utf-8")
    per_run = args.seconds * args.max_rate
    write_bodies(folder / "warm", count=args.connections * 20, threads=args.threads, prefix="WARM")
    write_bodies(folder / "bare", count=per_run, threads=args.threads, prefix="BARE")
    write_bodies(folder / "dunlink", count=per_run, threads=args.threads, prefix="RUN")

    results: dict[str, Any] = {}
    with fresh_database("intake") as database, redis_database(args.redis_db) as (broker, client):
        bare_port = free_port()
        bare_url = f"http://127.0.0.1:{bare_port}"
        env = dunlink_env(database=database, broker=broker, vendors=write_vendors(folder))
        with subprocess_running([sys.executable, "-c", BARE_APP, str(bare_port)], log_path=folder / "bare.log",
                                ready=lambda: http_ready(f"{bare_url}/healthz")(None),  # type: ignore[arg-type]
                                what="bare app") as bare, \
                ProcessGroup(env=env, log_dir=folder / "logs", cwd=folder) as group:
            api_port = free_port()
            api_url = f"http://127.0.0.1:{api_port}"
            api = group.start("api", ["api", "--port", str(api_port)], ready=serving(f"{api_url}/healthz"))
            # Warm both servers (imports, pools, first connections) with requests that are not counted.
            for url in (bare_url, api_url):
                run_wrk(url, script=script, bodies=folder / "warm", seconds=1, connections=args.connections,
                        threads=args.threads)
            time.sleep(2)  # requests still in flight when wrk stopped
            client.flushdb()
            query(database, "DELETE FROM inbox_events")
            batches_before = batch_sizes(api_url)
            for label, url, pid in (("bare", bare_url, bare.pid), ("dunlink", api_url, api.popen.pid)):
                with profiling(args.profile, pid, folder / f"profile-{label}.folded",
                               seconds=args.seconds):
                    cpu_before, busy_before = cpu_seconds(pid), machine_busy()
                    results[label] = run_wrk(url, script=script, bodies=folder / label, seconds=args.seconds,
                                             connections=args.connections, threads=args.threads)
                    cpu, busy = cpu_seconds(pid) - cpu_before, machine_busy()
                    results[label]["server_cpu_s"] = cpu
                    results[label]["server_cpu_ms_per_request"] = cpu * 1000 / max(1, results[label]["requests"])
                    results[label]["machine_busy_pct"] = (100 * (busy[0] - busy_before[0])
                                                          / max(1, busy[1] - busy_before[1]))
                time.sleep(1)
            stored = int(query(database, "SELECT count(*) FROM inbox_events")[0][0])
            queued = int(client.llen("dunlink.platform"))
            batches_after = batch_sizes(api_url)
            commits = batches_after[0] - batches_before[0]
            results["dunlink"]["commits"] = commits
            results["dunlink"]["mean_batch"] = (batches_after[1] - batches_before[1]) / commits if commits else 0.0
    dunlink, bare_result = results["dunlink"], results["bare"]
    answered_ok = dunlink["requests"] - dunlink["non_2xx"]
    return {
        "generator": f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, Lua script cycling "
                     f"pre-generated signed IPNs (one unique transaction_id each)",
        "connections": args.connections, "seconds": args.seconds,
        "bare": bare_result, "dunlink": dunlink,
        "ratio": dunlink["rps"] / bare_result["rps"] if bare_result["rps"] else math.nan,
        "stored": stored, "answered_ok": answered_ok, "wake_ups_queued": queued,
        "distinct_bodies": per_run,
        # wrk counts answered requests only; up to one request per connection was in flight when it stopped.
        "verified": (answered_ok <= stored <= answered_ok + args.connections and queued == stored
                     and dunlink["requests"] <= per_run),
    }


def batch_sizes(api_url: str) -> tuple[float, float]:
    """(commits, deliveries) of the api's group commit so far, from its /metrics."""
    text = httpx.get(f"{api_url}/metrics", headers=OPS_HEADERS, timeout=30).text
    found = dict(re.findall(r"^dunlink_webhook_batch_size_(count|sum) ([0-9.e+]+)$", text, re.MULTILINE))
    return float(found.get("count", 0)), float(found.get("sum", 0))


def print_intake(result: dict[str, Any]) -> None:
    print(f"\nIntake: {result['generator']}")
    print(f"{'endpoint':<28} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
          f"{'srv CPU ms/req':>14} {'machine busy':>12}")
    for label, name in (("bare", "bare FastAPI POST -> OK"), ("dunlink", "dunlink api (signed IPN)")):
        r = result[label]
        print(f"{name:<28} {r['requests']:>9} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['non_2xx']:>8} {r['server_cpu_ms_per_request']:>14.3f} {r['machine_busy_pct']:>11.0f}%")
    met = "met" if result["ratio"] >= INTAKE_TARGET else "NOT met"
    print(f"ratio dunlink/bare: {result['ratio']:.2f} (target >= {INTAKE_TARGET}: {met})")
    print(f"stored inbox rows {result['stored']}, answered OK {result['answered_ok']}, wake-ups queued "
          f"{result['wake_ups_queued']}: {'consistent' if result['verified'] else 'MISMATCH'}")
    if result["dunlink"].get("commits"):
        print(f"dunlink commits {result['dunlink']['commits']:.0f}, "
              f"{result['dunlink']['mean_batch']:.1f} deliveries per commit on average")


# -- end to end ----------------------------------------------------------------------------------------------


class Sink:
    """Reads the SMTP sink's arrival file: one line per message, ``time<TAB>recipients<TAB>case``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[tuple[float, str, str]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                rows.append((float(parts[0]), parts[1], parts[2]))
        return rows

    def count(self) -> int:
        return len(self.lines())


def relay_counts(log_dir: Path) -> dict[str, int]:
    """What the relay published again (work that waited in a queue past the settle time), from worker logs."""
    totals = {"events": 0, "cases": 0}
    for log_file in log_dir.glob("worker*.log"):
        for line in log_file.read_text(errors="replace").splitlines():
            if "relay_enqueued" not in line or not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            totals["events"] += int(record.get("events", 0))
            totals["cases"] += int(record.get("cases", 0))
    return totals


def start_workers(group: ProcessGroup, mode: str) -> None:
    common = ["--without-gossip", "--without-mingle"]
    if mode == "prefork":
        group.start("worker1", ["worker", "-n", "bench1@%h", "-c", "2", *common], ready=log_ready("ready."),
                    timeout=60)
    elif mode == "processes":
        for n in (1, 2):
            group.start(f"worker{n}", ["worker", "-n", f"bench{n}@%h", "-c", "1", *common],
                        ready=log_ready("ready."), timeout=60)
    elif mode == "wide":  # platform calls and SMTP mostly wait: more pool processes than cores
        for n in (1, 2):
            group.start(f"worker{n}", ["worker", "-n", f"bench{n}@%h", "-c", "3", *common],
                        ready=log_ready("ready."), timeout=60)
    else:
        raise ValueError(f"unknown worker mode {mode!r}")


def email_for(order_id: str) -> str:
    return f"{order_id.lower()}@buyers.example"


def send_failures(sandbox_url: str, order_ids: list[str], *, senders: int, rate: float
                  ) -> tuple[dict[str, float], list[str]]:
    """Fail installment 3 of each order through the sandbox; return when each fail call was made."""
    sent: dict[str, float] = {}
    problems: list[str] = []
    lock = threading.Lock()
    local = threading.local()
    start = time.time() + 0.05

    def fail(index_and_id: tuple[int, str]) -> None:
        index, order_id = index_and_id
        if rate > 0:
            delay = start + index / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=30)
        at = time.time()
        try:
            response = client.post(f"{sandbox_url}/sandbox/orders/{order_id}/installments/"
                                   f"{FAILED_INSTALLMENT}/fail")
            delivery = response.json().get("delivery", {}) if response.status_code == 200 else {}
            ok = response.status_code == 200 and delivery.get("status") == 200
            problem = None if ok else f"{order_id}: sandbox {response.status_code}, delivery {delivery}"
        except httpx.HTTPError as exc:
            problem = f"{order_id}: {type(exc).__name__}"
        with lock:
            sent[order_id] = at
            if problem:
                problems.append(problem)

    with ThreadPoolExecutor(max_workers=senders) as pool:
        list(pool.map(fail, enumerate(order_ids)))
    return sent, problems


def run_phase(name: str, *, sandbox_url: str, sink: Sink, database: str, order_ids: list[str], senders: int,
              rate: float, already: int, timeout: float, meter: CpuMeter) -> dict[str, Any]:
    expected = already + len(order_ids)
    meter.start()
    sent, problems = send_failures(sandbox_url, order_ids, senders=senders, rate=rate)
    try:
        wait_until(lambda: sink.count() >= expected, timeout=timeout, what=f"{expected} emails", interval=0.2)
    except TimeoutError as exc:
        problems.append(str(exc))
    cpu = meter.stop()
    time.sleep(0.5)  # a duplicate email would arrive right behind the first
    arrivals: dict[str, list[float]] = {}
    for arrived, recipients, _case in sink.lines():
        for recipient in recipients.split(","):
            arrivals.setdefault(recipient, []).append(arrived)
    latencies, mails_per_case = [], Counter[int]()
    for order_id in order_ids:
        times = arrivals.get(email_for(order_id), [])
        mails_per_case[len(times)] += 1
        if times and order_id in sent:
            latencies.append(min(times) - sent[order_id])
    first_sent = min(sent.values())
    last_mail = max((min(arrivals[email_for(o)]) for o in order_ids if arrivals.get(email_for(o))),
                    default=math.nan)
    last_sent = max(sent.values())

    replacements = Counter[str]()
    orders = httpx.get(f"{sandbox_url}/sandbox/orders", timeout=30).json()
    for order in orders:
        if order.get("replaces"):
            replacements[order["replaces"]] += 1
    originals = {o["id"]: o["status"] for o in orders}
    replacement_counts = Counter(replacements.get(order_id, 0) for order_id in order_ids)
    cancelled = sum(1 for order_id in order_ids if originals.get(order_id) == "cancelled")
    case_rows = query(database, "SELECT original_order_id, count(*) FROM cases WHERE original_order_id = ANY(%s) "
                                "GROUP BY original_order_id", (order_ids,))
    email_rows = query(database, "SELECT count(*) FROM emails e JOIN cases c ON c.id = e.case_id "
                                 "WHERE e.status = 'sent' AND c.original_order_id = ANY(%s)", (order_ids,))[0][0]
    cases = len(order_ids)
    verified = (replacement_counts == Counter({1: cases}) and mails_per_case == Counter({1: cases})
                and cancelled == cases and len(case_rows) == cases and all(n == 1 for _, n in case_rows)
                and email_rows == cases and not problems)
    span = last_mail - first_sent
    return {
        "phase": name, "cases": cases, "rate": rate or None, "senders": senders,
        "send_seconds": last_sent - first_sent, "span_seconds": span,
        "cases_per_s": cases / span if span > 0 else math.nan,
        "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99),
        "max_s": max(latencies, default=math.nan), "mean_s": statistics.fmean(latencies) if latencies else math.nan,
        "replacements_per_case": dict(replacement_counts), "emails_per_case": dict(mails_per_case),
        "originals_cancelled": cancelled, "cases_in_db": len(case_rows), "emails_sent_in_db": email_rows,
        "problems": problems[:10], "verified": verified,
        "cpu_ms_per_case": {name: round(value * 1000 / cases, 2) for name, value in cpu.items()
                            if name not in ("machine_busy_pct", "transactions")},
        "db_transactions_per_case": cpu["transactions"] / cases,
        "machine_busy_pct": cpu["machine_busy_pct"],
    }


def e2e_mode(args: argparse.Namespace, out: Path, mode: str) -> dict[str, Any]:
    folder = out / f"e2e-{mode}"
    vendors = write_vendors(folder)
    smtp_port = free_port()
    sink = Sink(folder / "arrivals.tsv")
    sink_log = folder / "smtp-sink.log"
    phases: list[dict[str, Any]] = []
    with fresh_database("e2e") as database, redis_database(args.redis_db) as (broker, client), \
            subprocess_running([sys.executable, "-c", SMTP_SINK, str(smtp_port), str(sink.path)],
                               log_path=sink_log, what="SMTP sink",
                               ready=lambda: "sink ready" in sink_log.read_text(errors="replace")):
        api_url = f"http://127.0.0.1:{free_port()}"
        sandbox_port = free_port()
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        env = dunlink_env(database=database, broker=broker, vendors=vendors, smtp_port=smtp_port,
                          platform_url=sandbox_url)
        with ProcessGroup(env=env, log_dir=folder / "logs", cwd=folder) as group:
            group.start("sandbox", ["sandbox", "--port", str(sandbox_port), "--webhook-base", api_url],
                        ready=serving(f"{sandbox_url}/sandbox/requests"))
            group.start("api", ["api", "--port", api_url.rsplit(":", 1)[1]], ready=serving(f"{api_url}/healthz"))
            start_workers(group, mode)
            group.start("beat", ["beat", "-s", str(folder / "beat-schedule")], ready=log_ready("beat: Starting"),
                        timeout=60)
            plan: list[tuple[str, int, float]] = [("warm-up", 8, 0.0), ("burst", args.cases, 0.0)]
            if args.rate > 0 and args.paced_cases > 0:
                plan.append(("paced", args.paced_cases, args.rate))
            with httpx.Client(timeout=10) as seeder:
                batches: dict[str, list[str]] = {}
                for phase, count, _rate in plan:
                    batches[phase] = []
                    for i in range(count):
                        order_id = f"CC-{mode[:3].upper()}-{phase[:4].upper()}-{i:05d}"
                        vendor = "acme" if i % 2 == 0 else "globex"
                        seeder.post(f"{sandbox_url}/sandbox/orders", json=order_json(
                            order_id, vendor=vendor, email=email_for(order_id))).raise_for_status()
                        batches[phase].append(order_id)
            done = 0
            meter = CpuMeter({name: process.popen.pid for name, process in group.processes.items()}, database)
            for phase, count, rate in plan:
                timeout = max(120.0, count / 2)
                pids = [p.popen.pid for n, p in group.processes.items() if n.startswith(("worker", "api"))]
                profile_seconds = min(60.0, count / 12) if phase == "burst" else 0.0
                with profiling(args.profile and phase == "burst", pids[0],
                               folder / "profile-api.folded", seconds=profile_seconds), \
                        profiling(args.profile and phase == "burst", pids[1],
                                  folder / "profile-worker1.folded", seconds=profile_seconds):
                    result = run_phase(phase, sandbox_url=sandbox_url, sink=sink, database=database,
                                       order_ids=batches[phase], senders=args.senders, rate=rate, already=done,
                                       timeout=timeout, meter=meter)
                done += count
                if phase != "warm-up":
                    phases.append(result)
                elif not result["verified"]:
                    raise RuntimeError(f"warm-up cases did not complete: {result}")
            relayed = relay_counts(folder / "logs")
            leftover = {queue: int(client.llen(queue)) for queue in ("dunlink.platform", "dunlink.email")}
    return {"mode": mode, "workers": {"prefork": "dunlink worker -c 2",
                                      "processes": "2 x dunlink worker -c 1",
                                      "wide": "2 x dunlink worker -c 3"}[mode],
            "phases": phases, "relayed": relayed, "queues_left": leftover}


def print_e2e(results: list[dict[str, Any]]) -> None:
    print("\nEnd to end: sandbox fail call -> IPN -> replacement -> original cancelled -> email at the SMTP sink")
    print(f"{'workers':<26} {'phase':<12} {'cases':>6} {'cases/s':>8} {'p50 s':>7} {'p99 s':>7} {'max s':>7} "
          f"{'send s':>7} {'verified':>9}")
    for mode in results:
        for phase in mode["phases"]:
            label = phase["phase"] if phase["rate"] is None else f"{phase['phase']} {phase['rate']:g}/s"
            print(f"{mode['workers']:<26} {label:<12} {phase['cases']:>6} {phase['cases_per_s']:>8.1f} "
                  f"{phase['p50_s']:>7.2f} {phase['p99_s']:>7.2f} {phase['max_s']:>7.2f} "
                  f"{phase['send_seconds']:>7.2f} {'yes' if phase['verified'] else 'NO':>9}")
            if not phase["verified"]:
                print(f"    replacements/case {phase['replacements_per_case']}, emails/case "
                      f"{phase['emails_per_case']}, cancelled {phase['originals_cancelled']}, problems "
                      f"{phase['problems']}")
            cpu = ", ".join(f"{name} {value:.1f}" for name, value in phase["cpu_ms_per_case"].items())
            print(f"    CPU ms per case: {cpu}; machine busy {phase['machine_busy_pct']:.0f}%; "
                  f"{phase['db_transactions_per_case']:.1f} database transactions per case")
        print(f"    {mode['workers']}: wake-ups published again by the relay {mode['relayed']}, "
              f"messages left in queues {mode['queues_left']}")
    best = max((p["cases_per_s"] for m in results for p in m["phases"] if p["phase"] == "burst"), default=0.0)
    print(f"best burst throughput: {best:.1f} cases/s (target >= {E2E_TARGET:g}: "
          f"{'met' if best >= E2E_TARGET else 'NOT met'})")


# -- main ----------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", default="intake,e2e", help="which parts to run (default intake,e2e)")
    parser.add_argument("--seconds", type=int, default=10, help="intake: wrk seconds per endpoint (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="intake: wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="intake: wrk threads (default 1)")
    parser.add_argument("--max-rate", type=int, default=10000,
                        help="intake: distinct IPNs generated per second of wrk run, more than dunlink answers, or "
                             "the run sends some twice and is not verified (default 10000)")
    parser.add_argument("--cases", type=int, default=500, help="e2e: failed installments per phase (default 500)")
    parser.add_argument("--rate", type=float, default=8.0,
                        help="e2e: cases/s of the paced phase, for latency below capacity; 0 skips it (default 8)")
    parser.add_argument("--paced-cases", type=int, default=100, help="e2e: cases of the paced phase (default 100)")
    parser.add_argument("--senders", type=int, default=16, help="e2e: concurrent fail calls (default 16)")
    parser.add_argument("--modes", default="prefork,processes,wide",
                        help="e2e worker layouts: prefork (-c 2), processes (2 x -c 1) and/or wide (2 x -c 3)")
    parser.add_argument("--redis-db", type=int, default=13, help="Redis database index, flushed (default 13)")
    parser.add_argument("--profile", action="store_true", help="record py-spy profiles into the output folder")
    parser.add_argument("--json", type=Path, help="also save the figures as JSON here")
    args = parser.parse_args()

    out = ROOT / "bench" / "out" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    parts = {part.strip() for part in args.parts.split(",")}
    figures: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                               "output": str(out)}
    figures["load_at_start"] = Path("/proc/loadavg").read_text().split()[0]
    print(f"dunlink pipeline benchmark, {os.cpu_count()} CPUs, load average {figures['load_at_start']} at start, "
          f"output in {out}")
    if "intake" in parts:
        figures["intake"] = intake(args, out)
        print_intake(figures["intake"])
    if "e2e" in parts:
        figures["e2e"] = []
        for mode in (m.strip() for m in args.modes.split(",") if m.strip()):
            figures["e2e"].append(e2e_mode(args, out, mode))
        print_e2e(figures["e2e"])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"\nfigures saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
