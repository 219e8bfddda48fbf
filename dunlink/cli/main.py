"""The ``dunlink`` command: one entry point for every process and for operators."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from dunlink.cli.cases import register as register_cases
from dunlink.cli.emails import register as register_emails
from dunlink.config.settings import SettingsError, load_checked_vendors, settings
from dunlink.config.vendors import VendorsFileError, load_vendors
from dunlink.devtools.soak import register as register_soak
from dunlink.runtime.preflight import StartupError, database_trouble
from dunlink.sandbox.faults import HOLD_S

Handler = Callable[[argparse.Namespace], int]


def _sandbox(args: argparse.Namespace) -> int:
    from dunlink.sandbox.server import serve

    vendors = load_vendors(settings().vendors_file)
    return serve(host=args.host, port=args.port, webhook_base=args.webhook_base, vendors=vendors,
                 timeout_hold_s=args.timeout_hold)


def _ready_to_work() -> None:
    """The vendors file, then the database: a process that works on cases stops here, in one line, when either
    is not there (and no empty SQLite file is created on the way)."""
    from dunlink.runtime.preflight import check_schema

    config = settings()
    load_checked_vendors(config)
    check_schema(config.database_url)


def _api(args: argparse.Namespace) -> int:
    from dunlink.config.logs import configure_logging
    from dunlink.runtime.metrics import API_CONNECTIONS_CLOSED
    from dunlink.webapp.app import broker_probe, create_app
    from dunlink.webapp.serving import ConnectionLimits, serve
    from workers.registry import celery_services

    configure_logging()
    _ready_to_work()
    services = celery_services()
    app = create_app(services, check_broker=broker_probe(services.settings.broker_url))
    ops = "/healthz, /metrics" if services.settings.ops_token else "/healthz; /metrics off: no DUNLINK_OPS_TOKEN"
    return serve(app, name="api", host=args.host, port=args.port,
                 about=f"(webhooks at /webhooks/copecart/<vendor>, {ops})",
                 limits=ConnectionLimits.from_settings(services.settings),
                 closed=lambda reason: API_CONNECTIONS_CLOSED.labels(reason=reason).inc(), log_config=None)


def _celery(command: str, extra: list[str], defaults: list[str]) -> int:
    from dunlink.config.logs import configure_logging
    from workers.celery_app import get_app

    configure_logging()
    load_checked_vendors(settings())  # fail now, not at the first task
    given = {arg.split("=", 1)[0] for arg in extra}
    argv = [command, *extra]
    for flag, value in zip(defaults[::2], defaults[1::2], strict=True):
        if flag not in given:
            argv += [flag, value]
    get_app().start(argv=argv)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from workers.registry import QUEUES

    return _celery("worker", args.celery_args, ["-Q", ",".join(QUEUES), "-l", "INFO"])


def _beat(args: argparse.Namespace) -> int:
    from pathlib import Path

    Path("var").mkdir(exist_ok=True)
    return _celery("beat", args.celery_args, ["-s", "var/celerybeat-schedule", "-l", "INFO"])


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dunlink.devtools.demo import run_demo

    return run_demo(broker_url=args.broker, base=Path(args.folder))


def _due(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from dunlink.config.logs import configure_logging
    from dunlink.runtime.bootstrap import build_services
    from dunlink.usecases.lifecycle import run_due

    if args.now is None:
        now = datetime.now(UTC)
    else:
        try:
            now = datetime.fromisoformat(args.now)
        except ValueError:
            print(f"dunlink due: --now must be an ISO-8601 time such as 2026-12-01T08:00:00+00:00, got {args.now!r}",
                  file=sys.stderr)
            return 2
        if now.tzinfo is None:
            print("dunlink due: --now needs a time zone offset (e.g. +00:00 or Z)", file=sys.stderr)
            return 2
    configure_logging()
    _ready_to_work()
    services = build_services(enqueue=lambda *_: None)
    print(f"running what is due at {now.isoformat()} ...", file=sys.stderr)
    report = run_due(services, now=now)
    print(report)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from adapters.db.migrate import current_revision, upgrade
    from dunlink.runtime.preflight import safe_database_url

    url = settings().database_url
    upgrade(url)
    print(f"database at revision {current_revision(url)} ({safe_database_url(url)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dunlink",
        description="Automated dunning for installment orders: replacement order, original cancelled, "
        "payment link emailed. Settings come from DUNLINK_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sandbox = commands.add_parser(
        "sandbox", help="run the sandbox platform (order API, faults, signed IPNs) for development and tests",
        description="Run a stand-in for the checkout platform: the order API dunlink calls (DUNLINK_PLATFORM_URL "
        "points at it), payment pages at /pay/<order>, and /sandbox/ calls that seed orders, fail or pay "
        "installments (delivering the matching IPN, signed with the vendor's secret from the vendors file, to "
        "--webhook-base), inject faults and list every call received. It keeps everything in memory: a "
        "restart forgets it, and its payment links die with it. Never point production at it.")
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    sandbox.add_argument(
        "--webhook-base",
        default="http://127.0.0.1:8000",
        help="where fail/pay deliver signed IPNs: {base}/webhooks/copecart/{vendor} (default http://127.0.0.1:8000)",
    )
    # Not in --help nor the contract: only tests shorten the hold, to wait a timeout fault out in seconds.
    sandbox.add_argument("--timeout-hold", type=float, default=HOLD_S, help=argparse.SUPPRESS)
    sandbox.set_defaults(handler=_sandbox)

    api = commands.add_parser(
        "api", help="serve the webhook app (CopeCart IPNs, /healthz, /metrics)",
        description="Serve the webhook app: CopeCart IPNs at POST /webhooks/copecart/<vendor> (verified, stored, "
        "answered OK, then a worker is woken), GET /healthz, and GET /metrics with DUNLINK_OPS_TOKEN as bearer "
        "token. What one client may hold (connections, header and body time, keep-alive) is set by the "
        "DUNLINK_API_* settings. It refuses to start until the database is migrated ('dunlink db upgrade'). Put "
        "a TLS-terminating proxy in front of it.")
    api.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    api.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    api.set_defaults(handler=_api)

    worker = commands.add_parser(
        "worker", help="run a Celery worker on the platform and email queues; extra arguments go to celery",
        description="Run a Celery worker (same as 'celery -A workers worker'). Arguments after the command are "
        "passed to celery, e.g. 'dunlink worker -Q dunlink.email -c 4'. Default queues: dunlink.platform and "
        "dunlink.email.")
    worker.add_argument("celery_args", nargs=argparse.REMAINDER, help="arguments for celery worker")
    worker.set_defaults(handler=_worker)

    beat = commands.add_parser(
        "beat", help="run Celery beat: wakes the relay every few seconds; extra arguments go to celery",
        description="Run Celery beat (same as 'celery -A workers beat'); run exactly one per deployment.")
    beat.add_argument("celery_args", nargs=argparse.REMAINDER, help="arguments for celery beat")
    beat.set_defaults(handler=_beat)

    demo = commands.add_parser(
        "demo", help="run the whole pipeline on embedded defaults (no Redis, PostgreSQL or mail server needed)",
        description="Start the sandbox platform, a local mail catcher, the webhook app, a worker and beat on an "
        "embedded broker and SQLite; fail installments of seeded orders and show what dunlink did. Each run "
        "works in a new folder under --folder.")
    demo.add_argument("--broker", default=None, help="use this broker instead of the embedded one, e.g. "
                      "redis://127.0.0.1:6379/0")
    demo.add_argument("--folder", default="var/demo", help="where runs are kept (default var/demo)")
    demo.set_defaults(handler=_demo)

    due = commands.add_parser(
        "due", help="run what is due now (or at --now): reminders, notices, expiries, retries, summaries",
        description="Run, in this process, everything due at an instant: stored events not yet handled, case "
        "steps whose time has come (retries, reminders, final notices, expiries) and vendor summaries. Beat "
        "runs the same work through the workers every few seconds; use this to catch up after downtime.")
    due.add_argument("--now", default=None, metavar="ISO-8601",
                     help="the instant to run at, with a zone offset (default: the current time)")
    due.set_defaults(handler=_due)

    db = commands.add_parser(
        "db", help="manage the database schema",
        description="Manage the schema of the database in DUNLINK_DATABASE_URL.")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_commands.add_parser(
        "upgrade", help="apply every pending migration to DUNLINK_DATABASE_URL (safe to run again)",
        description="Apply every pending migration to the database in DUNLINK_DATABASE_URL, creating the schema "
        "(and a SQLite file) when there is none. Safe to run again; run it once per release, before the new "
        "processes start: the api, workers and 'due' refuse to start on a database that is behind."
    ).set_defaults(handler=_db_upgrade)

    register_cases(commands)
    register_emails(commands)
    register_soak(commands)
    return parser


PASS_THROUGH = ("worker", "beat")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw and raw[0] in PASS_THROUGH and not {"-h", "--help"} & set(raw[1:]):
        # Everything after 'worker' or 'beat' belongs to celery, options included.
        args = parser.parse_args(raw[:1])
        args.celery_args = raw[1:]
    else:
        args = parser.parse_args(raw)
    handler: Handler = args.handler
    try:
        status = handler(args)
        sys.stdout.flush()  # here, where a closed pipe can be handled, not at exit
        return status
    except (SettingsError, VendorsFileError) as exc:
        print(f"dunlink: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"dunlink: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`dunlink cases list | head`): stop quietly. Python's own flush at exit would
        # fail again on the closed pipe, so standard output now points at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        # A database that stops answering while a command works: one line naming it, not a chained traceback.
        hint = ("is DUNLINK_DATABASE_URL right, and the database server up?" if args.command == "db" else
                "is DUNLINK_DATABASE_URL right, and has 'dunlink db upgrade' run?")
        trouble = database_trouble(exc, settings().database_url, hint=hint)
        if trouble is None:
            raise
        print(f"dunlink: {trouble}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
