"""The price of correctness: dunlink end to end beside a plain Celery chain doing the same calls.

Both stacks run in the same run, one after the other, on the same kind of sandbox, the same SMTP sink, the
same worker layout (one Celery worker, ``-c 2``, ``--without-gossip --without-mingle``, ``-l INFO``), the same
Redis and the same number of cases. In each, ``--cases`` orders are seeded in the sandbox and installment 3
of each is failed through ``POST /sandbox/orders/{id}/installments/3/fail``, which signs and delivers the IPN
to the stack's intake; the time from IPN to email is the message's arrival at the sink minus the fail call.

dunlink
    ``dunlink api`` (inbox row, commit, wake-up), ``dunlink worker -c 2`` and ``dunlink beat`` on a fresh
    PostgreSQL database: the case, its leases, its timeline and the email ledger, committed step by step.
chain
    ``bench/chain_app.py``: the same web stack checks the signature and parses the IPN, then publishes
    ``fetch -> create -> cancel -> email`` as a Celery chain; no database, no ledger, no relay.

Each stack gets a warm-up, a ``burst`` (every case sent as fast as ``--senders`` threads can; cases/s =
cases / (last email - first IPN)) and a ``paced`` phase (``--paced-cases`` at ``--rate``/s, for latency
below capacity). Checked in both: one replacement per case, the original cancelled, one email per case.
``--rounds 2`` alternates the stacks twice (dunlink, chain, dunlink, chain) and keeps every round.

    .venv/bin/python bench/chain.py [--cases 500] [--rounds 1] [--json bench/out/chain.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

import httpx  # noqa: E402
import pipeline as pl  # noqa: E402

from dunlink.devtools.processes import ProcessGroup, free_port, http_ready, log_ready, serving  # noqa: E402
from tests.support.stack import order_json  # noqa: E402

TARGET = 0.6
COMMON = ["--without-gossip", "--without-mingle", "-l", "INFO"]


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(limit: float = 1.5, *, most: float = 900, every: float = 30) -> float:
    """Wait (at most ``most`` seconds) until the 1-minute load average is below ``limit``; return it."""
    deadline = time.monotonic() + most
    load = loadavg()
    while load > limit and time.monotonic() < deadline:
        print(f"  load {load:.2f} > {limit}: waiting", flush=True)
        time.sleep(every)
        load = loadavg()
    return load


def verify(sandbox_url: str, order_ids: list[str], sink: pl.Sink) -> dict[str, Any]:
    orders = httpx.get(f"{sandbox_url}/sandbox/orders", timeout=30).json()
    replacements = Counter(o["replaces"] for o in orders if o.get("replaces"))
    status = {o["id"]: o["status"] for o in orders}
    mails = Counter(r for _, recipients, _ in sink.lines() for r in recipients.split(","))
    per_case = Counter(replacements.get(o, 0) for o in order_ids)
    emails = Counter(mails.get(pl.email_for(o), 0) for o in order_ids)
    cancelled = sum(1 for o in order_ids if status.get(o) == "cancelled")
    n = len(order_ids)
    return {"replacements_per_case": dict(per_case), "emails_per_case": dict(emails), "cancelled": cancelled,
            "verified": per_case == Counter({1: n}) and emails == Counter({1: n}) and cancelled == n}


def run_phase(name: str, *, sandbox_url: str, sink: pl.Sink, order_ids: list[str], senders: int, rate: float,
              already: int, cpu_of: dict[str, int], database: str | None) -> dict[str, Any]:
    load = loadavg()
    before = {k: pl.tree_cpu_seconds(pid) for k, pid in cpu_of.items()}
    backends = {pid: pl.cpu_seconds(pid) for pid in pl.postgres_backends(database)} if database else {}
    busy = pl.machine_busy()
    sent, problems = pl.send_failures(sandbox_url, order_ids, senders=senders, rate=rate)
    expected = already + len(order_ids)
    try:
        pl.wait_until(lambda: sink.count() >= expected, timeout=max(120.0, len(order_ids) / 2),
                      what=f"{expected} emails", interval=0.2)
    except TimeoutError as exc:
        problems.append(str(exc))
    cpu = {k: pl.tree_cpu_seconds(pid) - before[k] for k, pid in cpu_of.items()}
    if database:
        cpu["postgres"] = sum(pl.cpu_seconds(pid) - backends.get(pid, 0.0) for pid in pl.postgres_backends(database))
    after = pl.machine_busy()
    time.sleep(0.5)  # a duplicate would arrive right behind the first
    first_mail: dict[str, float] = {}
    for arrived, recipients, _ in sink.lines():
        for recipient in recipients.split(","):
            first_mail[recipient] = min(arrived, first_mail.get(recipient, math.inf))
    latencies = [first_mail[pl.email_for(o)] - sent[o] for o in order_ids if pl.email_for(o) in first_mail]
    span = max((first_mail.get(pl.email_for(o), math.nan) for o in order_ids), default=math.nan) - min(sent.values())
    n = len(order_ids)
    checked = verify(sandbox_url, order_ids, sink)
    return {"phase": name, "cases": n, "rate": rate or None, "cases_per_s": n / span if span > 0 else math.nan,
            "p50_s": pl.percentile(latencies, 50), "p99_s": pl.percentile(latencies, 99),
            "cpu_ms_per_case": {k: round(v * 1000 / n, 1) for k, v in cpu.items()},
            "machine_busy_pct": 100 * (after[0] - busy[0]) / max(1, after[1] - busy[1]), "load_before": load,
            **checked, "verified": checked["verified"] and not problems, "problems": problems[:5]}


def run_stack(kind: str, args: argparse.Namespace, out: Path, tag: str) -> dict[str, Any]:
    folder = out / f"{kind}-{tag}"
    vendors = pl.write_vendors(folder)
    smtp_port = free_port()
    sink = pl.Sink(folder / "arrivals.tsv")
    sink_log = folder / "smtp-sink.log"
    phases: list[dict[str, Any]] = []
    with pl.redis_database(args.redis_db) as (broker, _client), \
            pl.subprocess_running([sys.executable, "-c", pl.SMTP_SINK, str(smtp_port), str(sink.path)],
                                  log_path=sink_log, what="SMTP sink",
                                  ready=lambda: "sink ready" in sink_log.read_text(errors="replace")):
        database_cm = pl.fresh_database("chain") if kind == "dunlink" else None
        database = database_cm.__enter__() if database_cm else None
        try:
            intake_port, sandbox_port = free_port(), free_port()
            intake_url, sandbox_url = f"http://127.0.0.1:{intake_port}", f"http://127.0.0.1:{sandbox_port}"
            env = pl.dunlink_env(database=database or "sqlite:///unused.db", broker=broker, vendors=vendors,
                                 smtp_port=smtp_port, platform_url=sandbox_url)
            env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT)])
            with ProcessGroup(env=env, log_dir=folder / "logs", cwd=folder) as group:
                group.start("sandbox", ["sandbox", "--port", str(sandbox_port), "--webhook-base", intake_url],
                            ready=serving(f"{sandbox_url}/sandbox/requests"))
                if kind == "dunlink":
                    group.start("api", ["api", "--port", str(intake_port)], ready=serving(f"{intake_url}/healthz"))
                    group.start("worker", ["worker", "-n", f"bench-{tag}@%h", "-c", "2", *COMMON],
                                ready=log_ready("ready."), timeout=60)
                    group.start("beat", ["beat", "-s", str(folder / "beat-schedule")],
                                ready=log_ready("beat: Starting"), timeout=60)
                else:
                    # ProcessGroup runs the dunlink executable; the baseline runs its own entry points.
                    _start_raw(group, "api", [sys.executable, str(BENCH / "chain_app.py"), "api", "--port",
                                              str(intake_port)], ready=http_ready(f"{intake_url}/healthz"))
                    _start_raw(group, "worker", [sys.executable, "-m", "celery", "-A", "chain_app", "worker", "-n",
                                                 f"chain-{tag}@%h", "-c", "2", "-Q", "chain", *COMMON],
                               ready=log_ready("ready."))
                plan = [("warm-up", 8, 0.0), ("burst", args.cases, 0.0)]
                if args.rate > 0 and args.paced_cases > 0:
                    plan.append(("paced", args.paced_cases, args.rate))
                batches: dict[str, list[str]] = {}
                with httpx.Client(timeout=10) as seeder:
                    for phase, count, _ in plan:
                        batches[phase] = []
                        for i in range(count):
                            order_id = f"CC-{kind[:3].upper()}{tag}-{phase[:4].upper()}-{i:05d}"
                            seeder.post(f"{sandbox_url}/sandbox/orders", json=order_json(
                                order_id, vendor="acme" if i % 2 == 0 else "globex",
                                email=pl.email_for(order_id))).raise_for_status()
                            batches[phase].append(order_id)
                cpu_of = {name: p.popen.pid for name, p in group.processes.items() if name in ("api", "worker")}
                done = 0
                for phase, count, rate in plan:
                    if phase != "warm-up":
                        wait_for_quiet(args.max_load, most=args.max_wait)
                    result = run_phase(phase, sandbox_url=sandbox_url, sink=sink, order_ids=batches[phase],
                                       senders=args.senders, rate=rate, already=done, cpu_of=cpu_of,
                                       database=database)
                    done += count
                    if phase == "warm-up":
                        if not result["verified"]:
                            raise RuntimeError(f"{kind}: warm-up cases did not complete: {result}")
                        continue
                    phases.append(result)
        finally:
            if database_cm:
                database_cm.__exit__(None, None, None)
    return {"stack": kind, "round": tag, "phases": phases}


def _start_raw(group: ProcessGroup, name: str, argv: list[str], *, ready: Any) -> None:
    import subprocess

    from dunlink.devtools.processes import Process

    log_path = group.log_dir / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=group.env, cwd=BENCH, start_new_session=True)
    process = Process(name, argv, log_path, popen)
    group.processes[name] = process
    group.wait(process, ready, timeout=60)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def best(stack: str, phase: str, key: str) -> list[float]:
        return [p[key] for r in runs if r["stack"] == stack for p in r["phases"] if p["phase"] == phase]

    dunlink, plain = best("dunlink", "burst", "cases_per_s"), best("chain", "burst", "cases_per_s")
    ratio = (sum(dunlink) / len(dunlink)) / (sum(plain) / len(plain)) if dunlink and plain else math.nan
    return {"dunlink_cases_per_s": dunlink, "chain_cases_per_s": plain, "ratio": ratio, "target": TARGET,
            "met": ratio >= TARGET}


def print_table(runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print("\nPipeline vs plain chain: sandbox fail call -> IPN -> replacement -> original cancelled -> email at "
          "the SMTP sink; one worker -c 2 each")
    print(f"{'stack':<22} {'round':>5} {'phase':<10} {'cases':>6} {'cases/s':>8} {'p50 s':>7} {'p99 s':>7} "
          f"{'load':>5} {'busy':>5} {'verified':>8}  CPU ms per case")
    names = {"dunlink": "dunlink (durable)", "chain": "plain Celery chain"}
    for run in runs:
        for p in run["phases"]:
            label = p["phase"] if p["rate"] is None else f"{p['phase']} {p['rate']:g}/s"
            cpu = ", ".join(f"{k} {v:.1f}" for k, v in p["cpu_ms_per_case"].items())
            print(f"{names[run['stack']]:<22} {run['round']:>5} {label:<10} {p['cases']:>6} {p['cases_per_s']:>8.1f} "
                  f"{p['p50_s']:>7.2f} {p['p99_s']:>7.2f} {p['load_before']:>5.2f} {p['machine_busy_pct']:>4.0f}% "
                  f"{'yes' if p['verified'] else 'NO':>8}  {cpu}")
            if not p["verified"]:
                print(f"    replacements/case {p['replacements_per_case']}, emails/case {p['emails_per_case']}, "
                      f"cancelled {p['cancelled']}, problems {p['problems']}")
    print(f"ratio dunlink/chain (burst cases/s): {summary['ratio']:.2f} (target >= {TARGET}: "
          f"{'met' if summary['met'] else 'NOT met'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", type=int, default=500, help="cases in the burst (default 500)")
    parser.add_argument("--paced-cases", type=int, default=100, help="cases in the paced phase (default 100)")
    parser.add_argument("--rate", type=float, default=8.0, help="paced phase cases/s; 0 skips it (default 8)")
    parser.add_argument("--senders", type=int, default=16, help="concurrent fail calls (default 16)")
    parser.add_argument("--rounds", type=int, default=1, help="dunlink then chain, this many times (default 1)")
    parser.add_argument("--redis-db", type=int, default=12, help="Redis database index, flushed (default 12)")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-minute load below this")
    parser.add_argument("--max-wait", type=float, default=900, help="wait at most this many seconds for it")
    parser.add_argument("--json", type=Path, help="also save the figures as JSON here")
    args = parser.parse_args()
    out = ROOT / "bench" / "out" / datetime.now().strftime("%Y%m%d-%H%M%S-chain")
    out.mkdir(parents=True, exist_ok=True)
    print(f"dunlink vs plain chain, {os.cpu_count()} CPUs, load {Path('/proc/loadavg').read_text().strip()}, "
          f"output in {out}", flush=True)
    runs = []
    for n in range(1, args.rounds + 1):
        for kind in ("dunlink", "chain"):
            runs.append(run_stack(kind, args, out, str(n)))
    summary = summarise(runs)
    print_table(runs, summary)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"),
                                         "cpus": os.cpu_count(), "runs": runs, "summary": summary},
                                        indent=2, default=str) + "\n", encoding="utf-8")
        print(f"figures saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
