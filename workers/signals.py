"""Celery signal hooks: one log format in worker and beat processes, and case context on task lines.

Connecting a receiver to ``setup_logging`` tells Celery not to install its own handlers, so its lines
("Task … received", "… ready.") go through :func:`dunlink.config.logs.configure_logging` like ours: one format,
with masking. It is imported by ``workers.tasks``, which Celery loads before it sets up logging, in the
worker and in beat alike.

Each task starts with an empty log context; the pipeline binds case, vendor and order as soon as it has
read them (in the statement it needs anyway), so every line logged while it works on a case, including
those of httpx, the SMTP adapter and Celery itself, carries them.

A worker or beat checks the vendors file as it starts, however it was started; a worker also checks that its
database is migrated, and both name ``DUNLINK_BROKER_URL`` once when the broker does not answer.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from celery import signals

from dunlink.config.logs import bind_case, clear_context, configure_logging
from dunlink.config.settings import SettingsError, load_checked_vendors, settings
from dunlink.config.vendors import VendorsFileError
from dunlink.runtime.preflight import StartupError, broker_trouble, check_schema
from dunlink.usecases.ports import Work
from workers.celery_app import transport_options

log = structlog.get_logger("dunlink.worker")

# Tasks whose first argument is a vendor's slug.
_VENDOR_TASKS = frozenset({Work.SEND_SUMMARY.value})


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    configure_logging(level=loglevel or logging.INFO)


@signals.celeryd_init.connect  # type: ignore[untyped-decorator]
def _worker_init(**_: Any) -> None:
    """A worker, however started, checks what its tasks need before it takes one: the vendors file, then the
    database's schema; each stops it in one line. A broker it cannot reach is named once, then Celery retries."""
    _check_vendors_file()
    _check_database()
    _name_unreachable_broker()


@signals.beat_init.connect  # type: ignore[untyped-decorator]
def _beat_init(**_: Any) -> None:
    """Beat publishes wake-ups only (the relay's tasks read the database, in the workers)."""
    _check_vendors_file()
    _name_unreachable_broker()


def _check_vendors_file() -> None:
    """A worker or beat started as ``celery -A workers ...`` checks the vendors file as ``dunlink worker`` does:
    a bad file stops it now, in one line, not each task later."""

    try:
        load_checked_vendors(settings())
    except (VendorsFileError, SettingsError) as exc:
        print(f"dunlink: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _check_database() -> None:

    try:
        check_schema(settings().database_url)
    except StartupError as exc:
        print(f"dunlink: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _name_unreachable_broker() -> None:
    """Celery's own lines say it cannot connect and retries, without the setting that names the broker."""

    url = settings().broker_url
    trouble = broker_trouble(url, transport_options(url))
    if trouble is not None:
        print(f"dunlink: {trouble}", file=sys.stderr, flush=True)


@signals.task_prerun.connect  # type: ignore[untyped-decorator]
def _bind_task_context(task: Any = None, args: tuple[Any, ...] | list[Any] | None = None, **_: Any) -> None:
    clear_context()
    if args and getattr(task, "name", None) in _VENDOR_TASKS:
        bind_case({"vendor": args[0]})


@signals.task_postrun.connect  # type: ignore[untyped-decorator]
def _clear_task_context(**_: Any) -> None:
    clear_context()
