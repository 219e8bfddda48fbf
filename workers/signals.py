"""Celery signal hooks: one log format in worker and beat processes, and case context on task lines.

Connecting a receiver to ``setup_logging`` tells Celery not to install its own handlers, so its lines
("Task … received", "… ready.") go through :func:`workers.logs.configure_logging` like ours: one format,
with masking. It is imported by ``workers.tasks``, which Celery loads before it sets up logging, in the
worker and in beat alike.

Before each task, the ids it was given are looked up (one primary-key read) so every line logged while it
runs, including those of httpx, the SMTP adapter and Celery itself, carries the case, vendor and order.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from celery import signals
from sqlalchemy.exc import SQLAlchemyError

from adapters.db import repositories
from workers.logs import bind_case, clear_context, configure_logging

log = structlog.get_logger("dunlink.worker")

# Tasks whose first argument is a case id, the one whose first argument is a stored webhook event's id,
# and those whose first argument is a vendor's slug.
_CASE_TASKS = frozenset({"dunlink.advance_case", "dunlink.send_email", "dunlink.send_link"})
_EVENT_TASK = "dunlink.process_event"
_VENDOR_TASKS = frozenset({"dunlink.send_summary"})


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    configure_logging(level=loglevel or logging.INFO)


@signals.task_prerun.connect  # type: ignore[untyped-decorator]
def _bind_task_context(task: Any = None, args: tuple[Any, ...] | list[Any] | None = None, **_: Any) -> None:
    clear_context()
    name = getattr(task, "name", None)
    if not args:
        return
    if name in _VENDOR_TASKS:
        bind_case({"vendor": args[0]})
        return
    if name not in _CASE_TASKS and name != _EVENT_TASK:
        return
    from workers.bootstrap import services

    try:
        with services().session_factory() as session:
            if name == _EVENT_TASK:
                context: dict[str, Any] = repositories.log_context_for_event(session, int(args[0]))
            else:
                context = repositories.log_context_for_case(session, str(args[0]))
    except (SQLAlchemyError, ValueError) as exc:
        # The task itself will meet the same problem and report it; the lines just carry less context.
        context = {"event_id": args[0]} if name == _EVENT_TASK else {"case": args[0]}
        log.debug("log_context_unavailable", error=type(exc).__name__)
    bind_case(context)


@signals.task_postrun.connect  # type: ignore[untyped-decorator]
def _clear_task_context(**_: Any) -> None:
    clear_context()
