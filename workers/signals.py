"""Celery signal hooks: one log format in worker and beat processes, and case context on task lines.

Connecting a receiver to ``setup_logging`` tells Celery not to install its own handlers, so its lines
("Task … received", "… ready.") go through :func:`workers.logs.configure_logging` like ours: one format,
with masking. It is imported by ``workers.tasks``, which Celery loads before it sets up logging, in the
worker and in beat alike.

Each task starts with an empty log context; the pipeline binds case, vendor and order as soon as it has
read them (in the statement it needs anyway), so every line logged while it works on a case, including
those of httpx, the SMTP adapter and Celery itself, carries them.

A worker or beat checks the vendors file as it starts, however it was started.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from celery import signals

from workers.logs import bind_case, clear_context, configure_logging

log = structlog.get_logger("dunlink.worker")

# Tasks whose first argument is a vendor's slug.
_VENDOR_TASKS = frozenset({"dunlink.send_summary"})


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    configure_logging(level=loglevel or logging.INFO)


@signals.celeryd_init.connect  # type: ignore[untyped-decorator]
@signals.beat_init.connect  # type: ignore[untyped-decorator]
def _check_vendors_file(**_: Any) -> None:
    """A worker or beat started as ``celery -A workers ...`` checks the vendors file as ``dunlink worker`` does:
    a bad file stops it now, in one line, not each task later."""
    from workers.settings import settings
    from workers.vendors import VendorsFileError, load_vendors

    try:
        load_vendors(settings().vendors_file)
    except VendorsFileError as exc:
        print(f"dunlink: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


@signals.task_prerun.connect  # type: ignore[untyped-decorator]
def _bind_task_context(task: Any = None, args: tuple[Any, ...] | list[Any] | None = None, **_: Any) -> None:
    clear_context()
    if args and getattr(task, "name", None) in _VENDOR_TASKS:
        bind_case({"vendor": args[0]})


@signals.task_postrun.connect  # type: ignore[untyped-decorator]
def _clear_task_context(**_: Any) -> None:
    clear_context()
