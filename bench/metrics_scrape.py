"""What one ``/metrics`` scrape costs at 1,000 and at 1,000,000 cases, before and after it stopped counting
every row on every scrape.

The database is built by ``bench/growth.py``'s builder (a fresh PostgreSQL database brought to the current schema,
``INSERT ... SELECT generate_series`` into ``cases``, ``case_events``, ``inbox_events`` and ``emails``; the
small size is measured, then the same database is topped up to the large one and ``VACUUM ANALYZE``d). At each
size, in this process, on that database:

before
    The reads every scrape made until now, one after the other in one transaction: ``case_figures``,
    ``step_outcomes``, ``emails_by_status``, ``relayed_events`` (whole tables) and ``ipn_to_email`` (the last
    24 hours). Median of ``--repeat``.
first scrape
    A new ``DatabaseCollector`` (what a starting api process has) collected once: it counts in full.
steady state
    The same collector, scraped after ``--work`` cases were run through the pipeline since its last scrape
    (webhook store, ``handle_event``, ``advance_case``, ``send_email`` against ``InMemoryPlatform`` and
    ``MemoryMailSender``, as in ``growth.py``), median of ``--repeat``; and scraped with nothing new.

Checked at each size: after the steady-state scrapes, the collector's figures equal a new collector's full
count. Also printed: how many payment-link emails fall in the 24-hour window of the IPN-to-email histogram,
which the first scrape reads and later ones keep up to date. At the large size, every statement of one
steady-state scrape is run again under ``EXPLAIN (ANALYZE, BUFFERS)``; sequential scans are listed.

    .venv/bin/python bench/metrics_scrape.py [--large 1000000] [--work 50] [--repeat 7] [--json FILE]
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import growth  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from sqlalchemy import event, text  # noqa: E402


def timed_ms(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return (time.perf_counter() - started) * 1000


def scrape_before(services: Any) -> None:
    """The database reads of one scrape as they were: every figure counted over its whole table."""
    from adapters.db import figures
    from dunlink.runtime.metrics import IPN_TO_EMAIL_WINDOW, SCRAPE_STATEMENT_TIMEOUT_MS

    with services.session_factory() as session:
        session.execute(text(f"SET LOCAL statement_timeout = {SCRAPE_STATEMENT_TIMEOUT_MS}"))
        figures.case_figures(session)
        figures.step_outcomes(session)
        figures.emails_by_status(session)
        figures.relayed_events(session)
        [(sent - received).total_seconds() for received, sent in figures.ipn_to_email(
            session, sent_since=services.clock() - IPN_TO_EMAIL_WINDOW)]
        session.rollback()


def database_figures(collector: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode())
            for s in family.samples if not s.name.startswith("dunlink_ipn_to_email")}


def measure(services: Any, url: str, recorder: growth.Recorder, *, label: str, work: int,
            repeat: int) -> dict[str, Any]:
    from adapters.db import figures
    from dunlink.runtime.metrics import IPN_TO_EMAIL_WINDOW, DatabaseCollector

    quiet = growth.Recorder()  # run_cases records one case's statements; not wanted here
    growth.run_cases(services, url, quiet, count=10, prefix=f"{label}W")  # warm: imports, pools, templates
    result: dict[str, Any] = {"load": float(Path("/proc/loadavg").read_text().split()[0])}
    result["before_ms"] = statistics.median(timed_ms(lambda: scrape_before(services)) for _ in range(repeat))

    collector = DatabaseCollector(services.session_factory, services.clock)
    result["first_ms"] = timed_ms(lambda: list(collector.collect()))
    steady, idle = [], []
    for round_ in range(repeat):
        growth.run_cases(services, url, quiet, count=work, prefix=f"{label}{round_}")
        recorder.on = round_ == repeat - 1
        steady.append(timed_ms(lambda: list(collector.collect())))
        recorder.on = False
        idle.append(timed_ms(lambda: list(collector.collect())))
    result["steady_ms"] = statistics.median(steady)
    result["idle_ms"] = statistics.median(idle)
    result["same_as_full_count"] = database_figures(collector) == database_figures(
        DatabaseCollector(services.session_factory, services.clock))
    with services.session_factory() as session:
        result["ipn_to_email_window"] = len(figures.ipn_to_email(
            session, sent_since=services.clock() - IPN_TO_EMAIL_WINDOW))
    return result


def main() -> int:
    parser = growth.sizes_parser(__doc__)
    parser.add_argument("--work", type=int, default=50, help="cases run between steady-state scrapes (50)")
    parser.add_argument("--repeat", type=int, default=7, help="scrapes per figure (median; 7)")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with growth.fresh_database("metrics", title="/metrics scrape", keep=args.keep) as (_, url):
        services = growth.build(url)
        recorder = growth.Recorder()
        recorder.label = "/metrics steady"
        event.listen(services.engine, "before_cursor_execute", recorder)
        seeded = 0
        for label, size in (("small", args.small), ("large", args.large)):
            took = growth.seed(url, seeded + 1, size - growth.RECENT_ACME, recent=seeded == 0)
            seeded = size - growth.RECENT_ACME
            counts = growth.table_counts(url)
            print(f"{label}: seeded to {counts} in {took:.0f} s", flush=True)
            recorder.statements.clear()
            results[label] = {"size": size, "rows": counts, "load_before": growth.wait_for_quiet(1.5),
                              **measure(services, url, recorder, label=label[0].upper(), work=args.work,
                                        repeat=args.repeat)}
        results["explain"] = growth.explain_all(url, recorder)
        services.engine.dispose()
    report(results, work=args.work, repeat=args.repeat)
    growth.save_json(args.json, results)
    return 0


def report(results: dict[str, Any], *, work: int, repeat: int) -> None:
    small, large = results["small"], results["large"]
    print(f"\n/metrics database figures, ms per scrape, PostgreSQL (load {small['load']:.2f} / {large['load']:.2f})")
    print(f"{'':<58} {small['size']:>10,} {large['size']:>10,} {'ratio':>7}")
    rows = [
        (f"before: every scrape counts every row (median of {repeat})", "before_ms"),
        ("after: first scrape of an api process (counts in full)", "first_ms"),
        (f"after: steady state, {work} cases of work since (median)", "steady_ms"),
        ("after: steady state, nothing new (median)", "idle_ms"),
    ]
    for title, key in rows:
        a, b = small[key], large[key]
        print(f"{title:<58} {a:>10.2f} {b:>10.2f} {b / a if a else math.nan:>7.2f}")
    print(f"steady-state figures equal a full count: {small['same_as_full_count']} / {large['same_as_full_count']}")
    print(f"payment-link emails in the 24 h window of dunlink_ipn_to_email_seconds: "
          f"{small['ipn_to_email_window']:,} / {large['ipn_to_email_window']:,}")
    print(f"\nStatements of one steady-state scrape at {large['size']:,} cases (EXPLAIN ANALYZE):")
    growth.print_plans(results["explain"])


if __name__ == "__main__":
    sys.exit(main())
