"""Running a soak end to end, its report, and the ``dunlink soak`` command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from adapters.email.capture import MailCatcher
from dunlink.devtools.processes import ProcessGroup, api_command, beat_command, free_port, sandbox_command

if TYPE_CHECKING:  # imported where used: every 'dunlink' command builds this parser, few run the soak
    from dunlink.devtools.processes import ProcessGroup


from dunlink.devtools.soak.checks import check
from dunlink.devtools.soak.driver import Soak
from dunlink.devtools.soak.infra import OwnRedis, PassThrough, throwaway_database
from dunlink.devtools.soak.model import (
    DEFAULT_POSTGRES,
    FAULTS,
    Check,
    Records,
    SoakOptions,
    ds24_slugs,
    vendor_slugs,
    vendors_toml,
)

PLATFORM_TIMEOUT_S = 1.0  # dunlink's read timeout on platform calls: short, so slow answers become lost ones

# -- the command -----------------------------------------------------------------------------------------------


def run_soak(options: SoakOptions) -> int:
    """Run the soak in a new folder under ``options.folder``; 0 when every check passed.

    Whatever happens (a failed check, the deadline, Ctrl-C or SIGTERM), everything started is stopped and the
    throwaway database dropped, in the reverse order of starting.
    """

    run = options.folder.resolve() / datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S-%f")
    run.mkdir(parents=True)
    slugs, ds24 = vendor_slugs(options.vendors), ds24_slugs(options.ds24_vendors)
    (run / "vendors.toml").write_text(vendors_toml(options.vendors, options.ds24_vendors), encoding="utf-8")
    on_ds24 = int(options.cases * options.ds24_share) if ds24 else 0
    print(f"dunlink soak: {options.cases} failed installments ({on_ds24} on Digistore24), "
          f"{len(slugs) + len(ds24)} vendors ({', '.join(slugs)}"
          f"{'; on Digistore24: ' + ', '.join(ds24) if ds24 else ''}), {options.workers} workers, "
          f"{options.kills} kills, seed {options.seed}; working in {run}", flush=True)
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
            # Digistore24's calls always pass through it (it records them); CopeCart's only to lose answers.
            passing = PassThrough(sandbox, rate=options.lost_answers, ds24_rate=options.ds24_lost_answers,
                                  seed=options.seed, client_timeout=PLATFORM_TIMEOUT_S)
            stack.callback(passing.stop)
            through = passing.start()
            env = {**os.environ, "DUNLINK_DATABASE_URL": database_url, "DUNLINK_BROKER_URL": redis.url,
                   "DUNLINK_VENDORS_FILE": str(run / "vendors.toml"),
                   "DUNLINK_PLATFORM_URL": through if passing.rate else sandbox, "DUNLINK_DIGISTORE24_URL": through,
                   "DUNLINK_PLATFORM_TOKEN": "sandbox-token", "DUNLINK_SMTP_URL": f"smtp://127.0.0.1:{mail.port}",
                   "DUNLINK_MAIL_FROM": "dunning@soak.example", "DUNLINK_VENDOR_SUMMARIES": "false",
                   "DUNLINK_PLATFORM_TIMEOUT": f"{PLATFORM_TIMEOUT_S:g}",
                   "DUNLINK_LEASE_SECONDS": "6"}
            group = stack.enter_context(ProcessGroup(env=env, log_dir=run / "logs", cwd=run))
            soak = Soak(options, run=run, database_url=database_url, redis=redis, mail=mail, group=group,
                        sandbox=sandbox, api=api, lost_answers=passing.dropped, calls=passing.calls)
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

    options = soak.options
    starting = {"sandbox": sandbox_command(sandbox_port, webhook_base=soak.api), "api": api_command(api_port)}
    starting.update(soak.worker(slot) for slot in range(1, options.workers + 1))
    starting["beat"] = beat_command(soak.run / "beat-schedule")
    group.start_together(starting, timeout=90)
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
        "digistore24_vendors": options.ds24_vendors,
        "digistore24_cases": sum(1 for o in soak.orders.values() if o.on_digistore24),
        "kills": len(tally.kills), "kill_times_s": [round(t, 1) for t in tally.kills],
        "redis_restarted_at_s": round(tally.redis_restarted_at, 1) if tally.redis_restarted_at else None,
        "fails_sent": tally.fails_sent, "duplicates_sent": tally.duplicates_sent,
        "redeliveries": tally.redeliveries, "race_pays": tally.race_pays, "races_refused": tally.races_refused,
        "replacement_pays": tally.replacement_pays,
        "platform_calls": len(records.requests),
        "digistore24_calls": dict(Counter(call.function for call in records.calls)),
        "digistore24_answers_lost": sum(1 for call in records.calls if call.lost),
        "platform_faults": dict(Counter(str(r["fault"]) for r in records.requests if r.get("fault"))),
        "answers_lost_after_effect": len(soak.lost_answers),
        "exited_on_their_own": tally.exits,
        "elapsed_s": round(soak.elapsed, 1),
        "drain_s": round(drained - (tally.last_fail_at or load_start), 1) if drained else None,
        "load_to_drained_s": round(drained - load_start, 1) if drained else None,
        "cases_per_s": round(options.cases / (drained - load_start), 2) if drained and drained > load_start else None,
    }
    print("checks (from the sandbox's and the mail catcher's records, Digistore24's call order from the soak's "
          "pass-through; the recovered amounts and the last check from dunlink's database):")
    for item in checks:
        print(f"  {'ok  ' if item.ok else 'FAIL'}  {item.name}: {item.summary}".rstrip(": "))
        for problem in item.problems[:25]:
            print(f"          - {problem}")
        if len(item.problems) > 25:
            print(f"          ... and {len(item.problems) - 25} more")
    print(f"sent: {tally.fails_sent} failures ({figures['digistore24_cases']} on Digistore24), "
          f"{tally.duplicates_sent} duplicate deliveries, {tally.redeliveries} re-deliveries, {tally.race_pays} "
          f"racing payments ({tally.races_refused} more refused: the rebilling was already stopped), "
          f"{tally.replacement_pays} replacement payments, {len(soak.lost_answers)} platform answers lost after "
          f"the effect ({figures['digistore24_answers_lost']} Digistore24 answers never read); worker SIGKILLs "
          f"{len(tally.kills)}, Redis restarts {1 if tally.redis_restarted_at else 0}")
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

    return make_url(url).database


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return number


def _whole(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return number


def _share(value: str) -> float:
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return share


def _soak(args: argparse.Namespace) -> int:
    options = SoakOptions(cases=args.cases, vendors=args.vendors, ds24_vendors=args.digistore24_vendors,
                          ds24_share=args.digistore24_share, workers=args.workers,
                          concurrency=args.concurrency, kills=args.kills,
                          database_url=args.database_url, postgres=args.postgres, seed=args.seed,
                          report=args.report, deadline=args.deadline, window=args.window, folder=args.folder,
                          lost_answers=args.lost_answers, ds24_lost_answers=args.digistore24_lost_answers)
    try:
        return run_soak(options)
    except RuntimeError as exc:
        print(f"dunlink soak: {exc}", file=sys.stderr)
        return 2




def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``soak`` to the ``dunlink`` parser."""
    soak = commands.add_parser(
        "soak", help="run every process under load and faults, then check nothing was lost or done twice",
        description="Start the sandbox, the webhook app, workers, beat, a mail catcher, a Redis of its own and "
        "a throwaway PostgreSQL database; fail N installments across several CopeCart and Digistore24 vendors "
        "with 20% duplicate deliveries, payments racing the pipeline, paid replacements and buy URLs, sandbox "
        "faults (20% 503, 5% timeouts, 5% 429), workers SIGKILLed and restarted, and Redis restarted once. "
        "Then check, from the sandbox's and the mail catcher's records: every accepted IPN reflected, at most "
        "one replacement and one effective cancel per original, never both open, one payment-link email per "
        "case by Message-ID; on Digistore24 one buy URL for exactly what is owed per dunned purchase, its "
        "rebilling stopped at most once and only after the link existed, one email carrying that link, none "
        "when the racing payment won, a payment through the link counted once; no case stuck. Exits 1 naming "
        "each violation, 0 when all checks pass.")
    soak.add_argument("--cases", type=_positive, default=2000, help="failed installments (default 2000)")
    soak.add_argument("--vendors", type=_positive, default=3,
                      help="CopeCart vendors the orders spread over (default 3)")
    soak.add_argument("--digistore24-vendors", type=_whole, default=2, metavar="N",
                      help="Digistore24 vendors besides them (default 2; 0: CopeCart only)")
    soak.add_argument("--digistore24-share", type=_share, default=0.25, metavar="SHARE",
                      help="share of the failed installments on the Digistore24 vendors (default 0.25)")
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
                      help="also drop the answer to this share of successful writes of CopeCart's order API after "
                      "the platform acted (a proxy in front of the sandbox), e.g. 0.03 (default 0: off)")
    soak.add_argument("--digistore24-lost-answers", type=_share, default=0.0, metavar="SHARE",
                      help="the same for Digistore24's createBuyUrl and stopRebilling; with no idempotency keys, "
                      "each lost link is made again (default 0: only answers dunlink gave up waiting for)")
    soak.add_argument("--folder", type=Path, default=Path("var/soak"),
                      help="where runs (logs, emails) are kept (default var/soak)")
    soak.set_defaults(handler=_soak)
