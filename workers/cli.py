"""The ``dunlink`` command: one entry point for every process and for operators."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from workers.settings import SettingsError, settings
from workers.vendors import VendorsFileError, load_vendors

Handler = Callable[[argparse.Namespace], int]


def _sandbox(args: argparse.Namespace) -> int:
    from workers.sandbox.server import serve

    vendors = load_vendors(settings().vendors_file)
    serve(host=args.host, port=args.port, webhook_base=args.webhook_base, vendors=vendors)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from adapters.db.migrate import current_revision, upgrade

    url = settings().database_url
    upgrade(url)
    print(f"database at revision {current_revision(url)} ({_safe_url(url)})")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dunlink",
        description="Automated dunning for installment orders: replacement order, original cancelled, "
        "payment link emailed. Settings come from DUNLINK_* environment variables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sandbox = commands.add_parser(
        "sandbox", help="run the sandbox platform (order API, faults, signed IPNs) for development and tests"
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sandbox.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    sandbox.add_argument(
        "--webhook-base",
        default="http://127.0.0.1:8000",
        help="where fail/pay deliver signed IPNs: {base}/webhooks/copecart/{vendor} (default http://127.0.0.1:8000)",
    )
    sandbox.set_defaults(handler=_sandbox)

    db = commands.add_parser("db", help="manage the database schema")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_commands.add_parser(
        "upgrade", help="apply every pending migration to DUNLINK_DATABASE_URL (safe to run again)"
    ).set_defaults(handler=_db_upgrade)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (SettingsError, VendorsFileError) as exc:
        print(f"dunlink: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
