"""Does a case cost more when the database is big? One case, one vendor summary, at 1,000 and 1,000,000 cases.

A fresh PostgreSQL database is brought to the current schema (the migrations of ``dunlink db upgrade``), then
filled with ``INSERT ... SELECT generate_series`` into ``cases``, ``case_events`` (4 per case), ``inbox_events``
(1 per case) and ``emails`` (1 per case), spread over two years and 200 vendors (``v2``..``v199``, ``acme``
and ``globex``). Cases younger than 14 days wait for payment (a reminder due within 3 days), older ones are
closed (recovered, resolved or lost), one in 2,000 is with a person. ``acme``'s own history is older than
32 days, and a fixed block of 250 recent ``acme`` cases (awaiting payment, recovered, lost, with a person) is
the same at both sizes, so its summary reads the same cases and only the table around it grows. The small
size is 750 seeded + the 250; the large one tops the same database up to 1,000,000, then ``VACUUM ANALYZE``.

At each size, in this process, with the real repositories, domain and renderer on that database:

case
    ``--cases`` IPNs stored as the webhook's writer stores them (``store_batch``, here one per commit), then
    ``handle_event`` -> ``advance_case`` -> ``send_email``: fetch, replacement, cancel, payment-link email.
    The platform is ``InMemoryPlatform`` and the mail ``MemoryMailSender`` (the adapters' in-process
    implementations, held to the same contract tests), so the time is dunlink's and the database's alone.
    Printed: wall ms per case (median and mean), this process's CPU ms and the database backends' CPU ms.
summary
    ``dunlink.usecases.lifecycle._summary_message`` for ``acme`` (``cases_for`` + ``summarise`` + render), median of
    ``--repeat`` calls.
relay, metrics
    ``relay`` (``take_for_relay`` + ``take_due``) and the ``/metrics`` database figures, median of
    ``--repeat`` calls: not targets, but they run every 2 s and at every scrape.

Every SELECT and UPDATE run by these is recorded and, at the large size, run again under
``EXPLAIN (ANALYZE, BUFFERS)`` (UPDATEs rolled back); any sequential scan is reported.

    .venv/bin/python bench/growth.py [--large 1000000] [--cases 200] [--json bench/out/growth.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]

import pipeline as pl  # noqa: E402
import psycopg  # noqa: E402
from chain import wait_for_quiet  # noqa: E402
from sqlalchemy import event  # noqa: E402

from adapters.db.inbox_batch import NewEvent, store_batch  # noqa: E402
from adapters.db.migrate import upgrade  # noqa: E402
from adapters.email.memory import MemoryMailSender  # noqa: E402
from adapters.platform.memory import InMemoryPlatform  # noqa: E402
from adapters.platform.port import Order  # noqa: E402
from dunlink.sandbox.ipn import build_ipn  # noqa: E402
from platforms.copecart import ipn  # noqa: E402
from tests.support.db import ADMIN_URL, database_url, drop_database  # noqa: E402
from tests.support.stack import order_json  # noqa: E402

TARGET = 1.5
VENDORS = 200
RECENT_ACME = 250
PLAN = json.dumps({"kind": "installments", "frequency": "monthly", "installments": [
    {"number": n, "amount": 5000, "due_date": f"2026-{n + 5:02d}-01", "status": "open"} for n in (1, 2, 3, 4)]},
    sort_keys=True)
BODY = json.dumps({"event": "payment.failed", "note": "seeded"} | {f"field_{i}": "x" * 20 for i in range(20)})

# Rows g in [lo, hi]; vendor by g % 200; acme and globex only older than 32 days (their recent activity
# is the fixed block), the others uniformly over two years.
SEED_CASES = """
INSERT INTO cases (id, vendor, original_order_id, failed_installment, replacement_kind, state, currency,
    outstanding_minor, replacement_plan, product_id, product_name, buyer_id, buyer_email, buyer_first_name,
    buyer_last_name, buyer_country_code, replacement_order_id, payment_url, link_sent_at, recovered_minor,
    reason, attempts, next_attempt_at, opened_at, updated_at, closed_at, relayed_at, reminder_days,
    expire_after_days, reminders_sent, final_notice_sent, adjustments)
SELECT 's' || lpad(g::text, 12, '0'), v.vendor, 'CC-SEED-' || g, 3, 'remaining_installments', s.state, 'EUR',
    20000, %(plan)s, 'p-42', 'Coaching Program', 'b-' || g, 'buyer' || g || '@seed.example', 'Anna', 'Meier',
    'DE', 'CC-SEED-R-' || g, 'http://127.0.0.1:8090/pay/CC-SEED-R-' || g, o.opened_at + interval '1 minute',
    CASE WHEN s.state = 'recovered' THEN 20000 ELSE 0 END,
    CASE WHEN s.state = 'needs_person' THEN 'the platform refused the replacement' END, 0,
    CASE WHEN s.state = 'awaiting_payment' THEN now() + random() * interval '3 days' END,
    o.opened_at, o.opened_at + interval '1 day',
    CASE WHEN s.state IN ('recovered', 'resolved', 'lost') THEN o.opened_at + interval '14 days' END,
    o.opened_at, '[3, 7]', 14, 0, false, '{}'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) g
CROSS JOIN LATERAL (SELECT CASE g %% 200 WHEN 0 THEN 'acme' WHEN 1 THEN 'globex' ELSE 'v' || (g %% 200) END
                    AS vendor) v
CROSS JOIN LATERAL (SELECT CASE WHEN v.vendor IN ('acme', 'globex')
                                THEN now() - interval '32 days' - random() * interval '698 days'
                                ELSE now() - random() * interval '730 days' END AS opened_at) o
CROSS JOIN LATERAL (SELECT CASE WHEN g %% 2000 = 7 AND v.vendor NOT IN ('acme', 'globex') THEN 'needs_person'
                                WHEN o.opened_at > now() - interval '14 days' THEN 'awaiting_payment'
                                WHEN random() < 0.25 THEN 'recovered' WHEN random() < 0.1 THEN 'resolved'
                                ELSE 'lost' END AS state) s
"""
SEED_RECENT_ACME = """
INSERT INTO cases (id, vendor, original_order_id, failed_installment, replacement_kind, state, currency,
    outstanding_minor, replacement_plan, product_id, product_name, buyer_id, buyer_email, buyer_first_name,
    buyer_last_name, buyer_country_code, replacement_order_id, payment_url, link_sent_at, recovered_minor,
    reason, attempts, next_attempt_at, opened_at, updated_at, closed_at, relayed_at, reminder_days,
    expire_after_days, reminders_sent, final_notice_sent, adjustments)
SELECT 'r' || lpad(g::text, 12, '0'), 'acme', 'CC-RECENT-' || g, 3, 'remaining_installments', s.state, 'EUR',
    20000, %(plan)s, 'p-42', 'Coaching Program', 'b-' || g, 'recent' || g || '@seed.example', 'Anna', 'Meier',
    'DE', 'CC-RECENT-R-' || g, 'http://127.0.0.1:8090/pay/CC-RECENT-R-' || g, o.opened_at + interval '1 minute',
    CASE WHEN s.state = 'recovered' THEN 20000 ELSE 0 END,
    CASE WHEN s.state = 'needs_person' THEN 'the platform refused the replacement' END, 0,
    CASE WHEN s.state = 'awaiting_payment' THEN now() + interval '2 days' END,
    o.opened_at, o.opened_at + interval '1 hour',
    CASE WHEN s.state IN ('recovered', 'lost') THEN o.opened_at + interval '2 days' END,
    o.opened_at, '[3, 7]', 14, 0, false, '{}'
FROM generate_series(1, %(n)s) g
CROSS JOIN LATERAL (SELECT now() - (g %% 30) * interval '1 day' - interval '3 hours' AS opened_at) o
CROSS JOIN LATERAL (SELECT (ARRAY['awaiting_payment', 'awaiting_payment', 'awaiting_payment', 'awaiting_payment',
                                  'recovered', 'recovered', 'recovered', 'lost', 'lost', 'needs_person'])[g %% 10 + 1]
                    AS state) s
"""
SEED_CHILDREN = """
INSERT INTO case_events (case_id, at, kind, detail)
SELECT c.id, c.opened_at + k * interval '1 minute',
       (ARRAY['opened', 'planned', 'replacement_created', 'original_cancelled'])[k], '{{}}'
FROM cases c CROSS JOIN generate_series(1, 4) k WHERE c.id {where};
INSERT INTO inbox_events (vendor, event_type, dedup_key, order_id, body, received_at, processed_at, outcome, case_id)
SELECT c.vendor, 'payment.failed', 'seed-' || c.id, c.original_order_id, %(body)s, c.opened_at,
       c.opened_at + interval '1 second', 'case_opened', c.id
FROM cases c WHERE c.id {where};
INSERT INTO emails (case_id, step, message_id, recipient, status, attempts, created_at, sent_at)
SELECT c.id, 'send_link', '<' || c.id || '.send_link@dunlink.example>', c.buyer_email, 'sent', 1,
       c.link_sent_at, c.link_sent_at
FROM cases c WHERE c.id {where};
"""


def conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def seed(url: str, lo: int, hi: int, *, recent: bool) -> float:
    """Seed background cases ``lo..hi`` (and the recent acme block) with their children; seconds taken."""
    started = time.monotonic()
    with psycopg.connect(conninfo(url), autocommit=False) as connection:
        connection.execute("SET synchronous_commit = off")
        connection.execute(SEED_CASES.encode(), {"plan": PLAN, "lo": lo, "hi": hi})
        where = f"BETWEEN 's{lo:012d}' AND 's{hi:012d}'"
        if recent:
            connection.execute(SEED_RECENT_ACME.encode(), {"plan": PLAN, "n": RECENT_ACME})
            where = f"IN (SELECT id FROM cases WHERE id BETWEEN 's{lo:012d}' AND 's{hi:012d}' OR id LIKE 'r%%')"  # noqa: S608
        for statement in SEED_CHILDREN.format(where=where).split(";"):
            if statement.strip():
                connection.execute(statement.encode(), {"body": BODY})
        connection.commit()
    with psycopg.connect(conninfo(url), autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    return time.monotonic() - started


def table_counts(url: str) -> dict[str, int]:
    return {t: int(pl.query(url, f"SELECT count(*) FROM {t}")[0][0])  # noqa: S608
            for t in ("cases", "case_events", "inbox_events", "emails")}


class Recorder:
    """Every SELECT/UPDATE the code under test sends, by the label of what was running."""

    def __init__(self) -> None:
        self.label = "-"
        self.statements: dict[tuple[str, str], Any] = {}
        self.on = False

    def __call__(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                 _many: bool) -> None:
        if self.on and statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            self.statements.setdefault((self.label, statement), parameters)


def build(url: str) -> Any:
    os.environ.update({"DUNLINK_DATABASE_URL": url, "DUNLINK_VENDORS_FILE": str(BENCH / "out" / "growth-vendors.toml"),
                       "DUNLINK_PLATFORM_URL": "http://127.0.0.1:8090", "DUNLINK_MAIL_FROM": "dunning@dunlink.example"})
    pl.write_vendors(BENCH / "out").rename(BENCH / "out" / "growth-vendors.toml")
    import structlog

    from dunlink.config.settings import Settings
    from dunlink.runtime.bootstrap import build_services

    # The same log lines a worker writes, rendered as usual, but not onto this table.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=open(os.devnull, "w")))  # noqa: SIM115
    services = build_services(Settings(), enqueue=lambda *_: None)
    return dataclasses.replace(services, platform=InMemoryPlatform(), mail=MemoryMailSender())


def median_ms(function: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def run_cases(services: Any, url: str, recorder: Recorder, *, count: int, prefix: str) -> dict[str, Any]:
    from dunlink.usecases.pipeline import advance_case, handle_event, send_email

    platform: InMemoryPlatform = services.platform
    now = datetime.now(UTC)
    ipns = []
    for i in range(count):
        order_id = f"CC-{prefix}-{i:05d}"
        vendor = "acme" if i % 2 == 0 else "globex"
        order = Order.from_json(order_json(order_id, vendor=vendor, email=f"{order_id.lower()}@buyers.example"))
        platform.seed(order)
        payload = build_ipn(order, 3, action="fail", transaction_id=f"T-{prefix}-{i}", ordered_at=now, now=now)
        body = json.dumps(payload, separators=(",", ":"))
        ipns.append((vendor, payload, body))
    backends_before = {pid: pl.cpu_seconds(pid) for pid in pl.postgres_backends(url)}
    walls: list[float] = []
    cpu_before = time.process_time()
    for index, (vendor, payload, body) in enumerate(ipns):
        recorder.on = index == count - 1  # one case's statements are enough
        started = time.perf_counter()
        recorder.label = "webhook store"
        event_ = ipn.parse_event(payload)
        [stored] = store_batch(services.engine, [NewEvent(vendor, event_.event_type, ipn.dedup_key(
            payload, body.encode()), event_.order_id, body)], now=services.clock())
        recorder.label = "handle_event"
        outcome = handle_event(services, stored.id)
        assert outcome.case_id is not None, outcome
        recorder.label = "advance_case"
        advance_case(services, outcome.case_id)
        recorder.label = "send_email"
        assert send_email(services, outcome.case_id).endswith("_sent")
        walls.append((time.perf_counter() - started) * 1000)
    recorder.on = False
    cpu = time.process_time() - cpu_before
    backends = sum(pl.cpu_seconds(pid) - backends_before.get(pid, 0.0) for pid in pl.postgres_backends(url))
    return {"cases": count, "wall_ms_median": statistics.median(walls), "wall_ms_mean": statistics.fmean(walls),
            "cpu_ms": cpu * 1000 / count, "postgres_cpu_ms": backends * 1000 / count}


def calibrate() -> float:
    """Milliseconds for a fixed pure-Python loop (median of 5): how fast the machine is right now.

    The two sizes are measured minutes apart and this machine's speed drifts by up to a factor of two over
    the day; the loop's time at each size says how much of a ratio is the machine rather than the data.
    """
    times = []
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(services: Any, url: str, recorder: Recorder, *, cases: int, repeat: int, prefix: str) -> dict[str, Any]:
    from dunlink.runtime.metrics import DatabaseCollector
    from dunlink.usecases.lifecycle import _summary_message
    from dunlink.usecases.pipeline import relay

    run_cases(services, url, recorder, count=20, prefix=f"{prefix}W")  # warm: imports, pools, templates
    load = float(Path("/proc/loadavg").read_text().split()[0])
    before = calibrate()
    result = {"load_before": load, "case": run_cases(services, url, recorder, count=cases, prefix=prefix)}
    vendor = services.vendors["acme"]
    now = datetime.now(UTC)
    today = now.astimezone(vendor.zone).date()
    with services.uow() as uow:
        from dunlink.usecases.lifecycle import local_day_window

        since = local_day_window(today - timedelta(days=31), vendor.zone).start
        result["summary_cases"] = len(uow.summaries.cases_for("acme", since=since))
    recorder.on = True
    recorder.label = "payment IPN"  # how a payment on a replacement or an original finds its case
    with services.uow() as uow:
        uow.cases.by_replacement("acme", "CC-SEED-R-400")
        uow.cases.open_for_order("acme", "CC-RECENT-1")
    recorder.label = "summary (acme)"
    result["summary_ms"] = median_ms(lambda: _summary_message(services, vendor, today, now), repeat)
    recorder.label = "relay"
    result["relay_ms"] = median_ms(lambda: relay(services), repeat)
    recorder.label = "/metrics"
    collector = DatabaseCollector(services.session_factory, services.clock)
    result["metrics_ms"] = median_ms(lambda: list(collector.collect()), max(1, repeat // 2))
    recorder.on = False
    result["calibration_ms"] = (before + calibrate()) / 2
    return result


def explain_all(url: str, recorder: Recorder) -> list[dict[str, Any]]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    found = []
    with engine.connect() as connection:
        for (label, statement), parameters in recorder.statements.items():
            transaction = connection.begin()
            try:
                rows = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) " + statement,
                                                  parameters).fetchall()
            finally:
                transaction.rollback()
            plan = "\n".join(row[0] for row in rows)
            seq = sorted(set(re.findall(r"Seq Scan on (\w+)", plan)))
            indexes = sorted(set(re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\w+)", plan)
                                 + re.findall(r"Bitmap Index Scan on (\w+)", plan)))
            took = re.search(r"Execution Time: ([\d.]+) ms", plan)
            found.append({"label": label, "statement": " ".join(statement.split()), "seq_scans": seq,
                          "indexes": indexes, "ms": float(took[1]) if took else math.nan, "plan": plan})
    engine.dispose()
    return found


def print_plans(explain: list[dict[str, Any]]) -> None:
    """:func:`explain_all`'s findings, a line a statement (time, full scans or indexes), then the full scans."""
    print(f"{'what':<16} {'ms':>8}  {'scans':<44} statement")
    for item in explain:
        scans = ", ".join([f"SEQ SCAN {t}" for t in item["seq_scans"]] + item["indexes"]) or "-"
        print(f"{item['label']:<16} {item['ms']:>8.2f}  {scans[:44]:<44} {item['statement'][:90]}")
    seq = [i for i in explain if i["seq_scans"]]
    print(f"sequential scans: {len(seq)} statement(s)" + (": " + "; ".join(
        f"{i['label']}: {', '.join(i['seq_scans'])}" for i in seq) if seq else ""))


def sizes_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every benchmark over a small and a large database shares."""
    parser = argparse.ArgumentParser(description=(description or "").splitlines()[0])
    parser.add_argument("--small", type=int, default=1_000, help="cases at the small size (default 1,000)")
    parser.add_argument("--large", type=int, default=1_000_000, help="cases at the large size (default 1,000,000)")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    parser.add_argument("--json", type=Path, help="also save the figures as JSON here")
    return parser


@contextmanager
def fresh_database(slug: str, *, title: str, keep: bool) -> Iterator[tuple[str, str]]:
    """A new PostgreSQL database at dunlink's schema, for one run: ``(name, url)``; dropped afterwards unless
    ``keep``. Prints the run's first line (its title, the machine, its load, the database)."""
    (BENCH / "out").mkdir(exist_ok=True)
    name = f"dunlink_bench_{slug}_{datetime.now():%H%M%S}"
    with psycopg.connect(conninfo(ADMIN_URL), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    print(f"{title} benchmark, {os.cpu_count()} CPUs, load {Path('/proc/loadavg').read_text().strip()}, "
          f"database {name}", flush=True)
    try:
        url = database_url(name)
        upgrade(url)  # what ``dunlink db upgrade`` runs, with this checkout's migrations
        yield name, url
    finally:
        if not keep:
            drop_database(name)


def main() -> int:
    parser = sizes_parser(__doc__)
    parser.add_argument("--cases", type=int, default=200, help="cases run through the pipeline per size (200)")
    parser.add_argument("--repeat", type=int, default=7, help="calls of summary, relay, metrics (median; 7)")
    args = parser.parse_args()
    with fresh_database("growth", title="growth", keep=args.keep) as (_, url):
        services = build(url)
        recorder = Recorder()
        event.listen(services.engine, "before_cursor_execute", recorder)
        results: dict[str, Any] = {}
        sizes = [("small", args.small), ("large", args.large)]
        seeded = 0
        for label, size in sizes:
            first = seeded == 0
            target_background = size - RECENT_ACME
            took = seed(url, seeded + 1, target_background, recent=first)
            seeded = target_background
            counts = table_counts(url)
            print(f"{label}: seeded to {counts} in {took:.0f} s", flush=True)
            load = wait_for_quiet(1.5)
            recorder.statements.clear()
            results[label] = {"size": size, "rows": counts, "seed_seconds": took, "load": load,
                              **measure(services, url, recorder, cases=args.cases, repeat=args.repeat,
                                        prefix=label[:1].upper())}
            if label == "large":
                results["explain"] = explain_all(url, recorder)
        services.engine.dispose()
    report(results)
    save_json(args.json, results)
    return 0


def save_json(path: Path | None, results: dict[str, Any]) -> None:
    """The run's figures as JSON at ``path`` (``--json``), dated; nothing without a path."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"date": datetime.now(UTC).isoformat(timespec="seconds"), **results}, indent=2,
                               default=str) + "\n", encoding="utf-8")
    print(f"figures saved to {path}")


def report(results: dict[str, Any]) -> None:
    small, large = results["small"], results["large"]
    print(f"\nGrowth: the same work with {small['size']:,} and {large['size']:,} cases in PostgreSQL "
          f"(load {small['load']:.2f} / {large['load']:.2f} before each)")
    print(f"{'figure':<44} {small['size']:>10,} {large['size']:>10,} {'ratio':>6}  target")
    rows = [
        ("case IPN->email, wall ms (median)", small["case"]["wall_ms_median"], large["case"]["wall_ms_median"], True),
        ("case IPN->email, wall ms (mean)", small["case"]["wall_ms_mean"], large["case"]["wall_ms_mean"], False),
        ("case, dunlink CPU ms", small["case"]["cpu_ms"], large["case"]["cpu_ms"], True),
        ("case, PostgreSQL backend CPU ms", small["case"]["postgres_cpu_ms"], large["case"]["postgres_cpu_ms"], False),
        (f"summary for acme ({small['summary_cases']} / {large['summary_cases']} cases), ms", small["summary_ms"],
         large["summary_ms"], True),
        ("relay take_for_relay + take_due, ms", small["relay_ms"], large["relay_ms"], False),
        ("/metrics database figures, ms", small["metrics_ms"], large["metrics_ms"], False),
    ]
    for name, a, b, targeted in rows:
        ratio = b / a if a else math.nan
        verdict = ("met" if ratio <= TARGET else "NOT met") if targeted else "-"
        print(f"{name:<44} {a:>10.2f} {b:>10.2f} {ratio:>6.2f}  {'<= 1.5 ' + verdict if targeted else verdict}")
    if "calibration_ms" in small and "calibration_ms" in large:
        drift = large["calibration_ms"] / small["calibration_ms"]
        print(f"machine speed: a fixed pure-Python loop took {small['calibration_ms']:.1f} ms around the "
              f"{small['size']:,} run and {large['calibration_ms']:.1f} ms around the {large['size']:,} run "
              f"(x{drift:.2f}); the ratios above divided by that: case wall "
              f"{large['case']['wall_ms_median'] / small['case']['wall_ms_median'] / drift:.2f}, case CPU "
              f"{large['case']['cpu_ms'] / small['case']['cpu_ms'] / drift:.2f}, summary "
              f"{large['summary_ms'] / small['summary_ms'] / drift:.2f} (the targets are judged on the raw ratios)")
    print(f"\nQuery plans at {large['size']:,} cases (EXPLAIN ANALYZE of every SELECT/UPDATE above, once each):")
    print_plans(results["explain"])


if __name__ == "__main__":
    sys.exit(main())
