"""Celery tasks: thin wrappers that pass ids to the pipeline. Every task may run twice; the pipeline makes
that harmless (leases, step state, idempotency keys, the email ledger)."""

from __future__ import annotations

from datetime import date
from typing import Any

import workers.signals  # noqa: F401  (Celery signal hooks: logging, case context on task lines)
from dunlink.usecases.lifecycle import publish_due_summaries, send_summary
from dunlink.usecases.pipeline import advance_case, handle_event, relay, send_email
from dunlink.usecases.ports import Work
from workers.celery_app import get_app
from workers.registry import BUSY_RETRY_SECONDS, FORMER_SEND_LINK, MAX_BUSY_RETRIES, TASKS, services

app = get_app()


@app.task(name=TASKS[Work.PROCESS_EVENT].name, bind=True, queue=TASKS[Work.PROCESS_EVENT].queue,
          max_retries=MAX_BUSY_RETRIES)  # type: ignore[untyped-decorator]
def process_event(self: Any, event_id: int) -> str:
    result = handle_event(services(), event_id, run_platform_steps=True)
    if result.busy:
        # The case is mid-step in another worker; try again shortly (the relay is the backstop).
        raise self.retry(countdown=BUSY_RETRY_SECONDS)
    return result.outcome


@app.task(name=TASKS[Work.ADVANCE_CASE].name, queue=TASKS[Work.ADVANCE_CASE].queue)  # type: ignore[untyped-decorator]
def advance_case_task(case_id: str) -> str:
    return advance_case(services(), case_id)


@app.task(name=TASKS[Work.SEND_EMAIL].name, queue=TASKS[Work.SEND_EMAIL].queue)  # type: ignore[untyped-decorator]
def send_email_task(case_id: str) -> str:
    return send_email(services(), case_id)


@app.task(name=FORMER_SEND_LINK, queue=TASKS[Work.SEND_EMAIL].queue)  # type: ignore[untyped-decorator]
def send_link_task(case_id: str) -> str:
    """The email task's former name: wake-ups queued before an upgrade still find a worker."""
    return send_email(services(), case_id)


@app.task(name=TASKS[Work.SEND_SUMMARY].name, queue=TASKS[Work.SEND_SUMMARY].queue)  # type: ignore[untyped-decorator]
def send_summary_task(vendor: str, day: str) -> str:
    return send_summary(services(), vendor, date.fromisoformat(day))


@app.task(name=TASKS[Work.RELAY].name, queue=TASKS[Work.RELAY].queue)  # type: ignore[untyped-decorator]
def relay_task() -> dict[str, int]:
    current = services()
    report = relay(current)
    return {"events": report.events, "cases": report.cases,
            "summaries": publish_due_summaries(current, current.clock())}
