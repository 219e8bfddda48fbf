"""Does a worker's memory stay flat? Resident memory of ``dunlink worker -c 2`` over many cases.

One ``dunlink worker -c 2`` (prefork: a parent and two pool children) and ``dunlink beat`` run on a fresh
PostgreSQL database, the sandbox (latency 0) and an aiosmtpd sink. To keep the machine's two cores for
the worker, the IPNs do not travel over HTTP: this process stores them as the webhook's group commit does
(``store_batch``: one INSERT and one commit per batch, then the batch's ``dunlink.process_event`` wake-ups
through ``enqueue_many``), in batches of ``--batch``
whose orders are seeded in the sandbox first, keeping at most ``--backlog`` cases in flight. Every case is
then the whole real thing in the worker: event, fetch, replacement, cancel, payment-link email over SMTP.

The resident set (VmRSS from /proc) of the worker's process tree is read before any case, after
``--warm-up`` cases (the start: imports, pools and templates loaded) and every ``--every`` cases. Printed:
each point, the growth from start to end, and the trend extrapolated to 50,000 cases.

    .venv/bin/python bench/memory.py [--cases 10000] [--every 1000] [--json bench/out/memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

import httpx  # noqa: E402
import pipeline as pl  # noqa: E402
from chain import wait_for_quiet  # noqa: E402

from adapters.db.inbox_batch import NewEvent, store_batch  # noqa: E402
from adapters.platform.port import Order  # noqa: E402
from dunlink.devtools.processes import ProcessGroup, free_port, log_ready, serving  # noqa: E402
from dunlink.sandbox.ipn import build_ipn  # noqa: E402
from platforms.copecart import ipn  # noqa: E402
from tests.support.stack import order_json  # noqa: E402

TARGET = 0.10
HORIZON = 50_000


def tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with suppress(OSError):
                pending.extend(int(child) for child in task.read_text().split())
    return found


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(pid: int, cases: int) -> dict[str, Any]:
    pids = tree(pid)
    each = [rss_kib(p) for p in pids]
    return {"cases": cases, "rss_mib": sum(each) / 1024, "per_process_mib": [round(v / 1024, 1) for v in each],
            "at": time.time()}


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases after the warm-up (default 10,000)")
    parser.add_argument("--warm-up", type=int, default=300, help="cases before the start point (default 300)")
    parser.add_argument("--every", type=int, default=1_000, help="read the memory every this many cases")
    parser.add_argument("--batch", type=int, default=100, help="IPNs stored and published at once (default 100)")
    parser.add_argument("--backlog", type=int, default=200, help="cases in flight at most (default 200)")
    parser.add_argument("--redis-db", type=int, default=11, help="Redis database index, flushed (default 11)")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-minute load below this")
    parser.add_argument("--max-wait", type=float, default=900, help="wait at most this many seconds for it")
    parser.add_argument("--json", type=Path, help="also save the figures as JSON here")
    args = parser.parse_args()
    out = ROOT / "bench" / "out" / datetime.now().strftime("%Y%m%d-%H%M%S-memory")
    out.mkdir(parents=True, exist_ok=True)
    load = wait_for_quiet(args.max_load, most=args.max_wait)
    print(f"worker memory, {os.cpu_count()} CPUs, load {load:.2f} at start, output in {out}", flush=True)
    vendors = pl.write_vendors(out)
    smtp_port = free_port()
    sink = pl.Sink(out / "arrivals.tsv")
    sink_log = out / "smtp-sink.log"
    samples: list[dict[str, Any]] = []
    total = args.warm_up + args.cases
    with pl.fresh_database("memory") as database, pl.redis_database(args.redis_db) as (broker, _client), \
            pl.subprocess_running([sys.executable, "-c", pl.SMTP_SINK, str(smtp_port), str(sink.path)],
                                  log_path=sink_log, what="SMTP sink",
                                  ready=lambda: "sink ready" in sink_log.read_text(errors="replace")):
        sandbox_port = free_port()
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        env = pl.dunlink_env(database=database, broker=broker, vendors=vendors, smtp_port=smtp_port,
                             platform_url=sandbox_url)
        os.environ.update({k: v for k, v in env.items() if k.startswith("DUNLINK_")})
        from dunlink.usecases.ports import PLATFORM_QUEUE
        from workers.registry import celery_services

        services = celery_services()  # wake-ups to the broker named in the environment, batched as the webhook's
        with ProcessGroup(env=env, log_dir=out / "logs", cwd=out) as group:
            group.start("sandbox", ["sandbox", "--port", str(sandbox_port), "--webhook-base", "http://127.0.0.1:9"],
                        ready=serving(f"{sandbox_url}/sandbox/requests"))
            worker = group.start("worker", ["worker", "-n", "memory@%h", "-c", "2", "--without-gossip",
                                            "--without-mingle"], ready=log_ready("ready."), timeout=60)
            group.start("beat", ["beat", "-s", str(out / "beat-schedule")], ready=log_ready("beat: Starting"),
                        timeout=60)
            time.sleep(2)
            samples.append({**sample(worker.popen.pid, 0), "label": "idle, before any case"})
            print(f"{'cases':>7} {'tree RSS MiB':>13}  per process MiB (parent, children)  cases/s", flush=True)
            print(f"{0:>7} {samples[0]['rss_mib']:>13.1f}  {samples[0]['per_process_mib']}", flush=True)
            fed, next_mark, started, last = 0, args.warm_up, time.time(), (time.time(), 0)
            now = datetime.now(UTC)
            with httpx.Client(timeout=30) as client:
                while True:
                    done = sink.count()
                    if done >= next_mark:
                        point = sample(worker.popen.pid, done)
                        rate = (done - last[1]) / max(1e-6, time.time() - last[0])
                        last = (time.time(), done)
                        point["label"] = "start (after warm-up)" if next_mark == args.warm_up else ""
                        point["cases"] = done - args.warm_up
                        samples.append(point)
                        print(f"{point['cases']:>7} {point['rss_mib']:>13.1f}  {point['per_process_mib']}  "
                              f"{rate:.1f}", flush=True)
                        next_mark += args.every
                        if done >= total:
                            break
                        continue
                    if fed < total and fed - done < args.backlog:
                        batch = range(fed, min(total, fed + args.batch))
                        events = []
                        for i in batch:
                            order_id = f"CC-MEM-{i:06d}"
                            vendor = "acme" if i % 2 == 0 else "globex"
                            raw = order_json(order_id, vendor=vendor, email=f"{order_id.lower()}@buyers.example")
                            client.post(f"{sandbox_url}/sandbox/orders", json=raw).raise_for_status()
                            payload = build_ipn(Order.from_json(raw), 3, action="fail", transaction_id=f"T-MEM-{i}",
                                                ordered_at=now, now=now)
                            body = json.dumps(payload, separators=(",", ":"))
                            events.append(NewEvent(vendor, ipn.FAILED, ipn.dedup_key(payload, body.encode()),
                                                   order_id, body))
                        stored = store_batch(services.engine, events, now=services.clock())
                        assert services.enqueue_many is not None
                        services.enqueue_many("dunlink.process_event", [[s.id] for s in stored if s.created],
                                              PLATFORM_QUEUE)
                        fed = batch.stop
                        continue
                    if not worker.alive():
                        raise RuntimeError(f"worker exited:\n{worker.log_text()[-3000:]}")
                    if time.time() - last[0] > 300:
                        raise RuntimeError(f"no progress for 5 minutes at {done} cases")
                    time.sleep(0.2)
            elapsed = time.time() - started
            emails = int(pl.query(database, "SELECT count(*) FROM emails WHERE status = 'sent'")[0][0])
        services.engine.dispose()
    result = analyse(samples, args, elapsed, emails, load)
    report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"figures saved to {args.json}")
    return 0


def slope_of(points: list[dict[str, Any]]) -> float:
    """Least-squares MiB per case through ``points``."""
    xs, ys = [p["cases"] for p in points], [p["rss_mib"] for p in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0.0


def analyse(samples: list[dict[str, Any]], args: argparse.Namespace, elapsed: float, emails: int,
            load: float) -> dict[str, Any]:
    """Growth from start to end, and two extrapolations to 50,000 cases: the slope over every point, and the
    slope over the second half, which tells a leak (still rising) from caches filling up (levelled off)."""
    measured = samples[1:]
    start, end = measured[0]["rss_mib"], measured[-1]["rss_mib"]
    whole = slope_of(measured)
    late = slope_of(measured[len(measured) // 2:])
    at_horizon = end + late * (HORIZON - measured[-1]["cases"])
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "load_at_start": load, "samples": samples,
            "cases": args.cases, "elapsed_s": elapsed, "emails_sent": emails, "start_mib": start, "end_mib": end,
            "growth": end / start - 1, "slope_kib_per_1000": whole * 1024 * 1000,
            "linear_50k_mib": start + whole * HORIZON, "late_slope_kib_per_1000": late * 1024 * 1000,
            "extrapolated_50k_mib": at_horizon, "extrapolated_growth": at_horizon / start - 1, "target": TARGET,
            "met": abs(end / start - 1) <= TARGET and abs(at_horizon / start - 1) <= TARGET}


def report(r: dict[str, Any]) -> None:
    print(f"\nWorker memory (dunlink worker -c 2, VmRSS of parent + pool children), {r['cases']:,} cases after "
          f"the warm-up in {r['elapsed_s']:.0f} s, {r['emails_sent']:,} emails sent; load {r['load_at_start']:.2f}")
    print(f"start {r['start_mib']:.1f} MiB, end {r['end_mib']:.1f} MiB: {100 * r['growth']:+.1f}% over "
          f"{r['cases']:,} cases")
    print(f"trend over every point {r['slope_kib_per_1000']:+.0f} KiB per 1,000 cases (a straight line would "
          f"reach {r['linear_50k_mib']:.1f} MiB at {HORIZON:,}); over the second half "
          f"{r['late_slope_kib_per_1000']:+.0f} KiB per 1,000 -> {r['extrapolated_50k_mib']:.1f} MiB at {HORIZON:,} "
          f"({100 * r['extrapolated_growth']:+.1f}% on the start); target flat within 10%: "
          f"{'met' if r['met'] else 'NOT met'}")

if __name__ == "__main__":
    sys.exit(main())
