"""Celery tasks: thin wrappers that pass ids to the pipeline. Every task may run twice; the pipeline makes
that harmless (leases, step state, idempotency keys, the email ledger)."""

from __future__ import annotations

from datetime import date
from typing import Any

import workers.signals  # noqa: F401  (Celery signal hooks: logging, case context on task lines)
from workers.bootstrap import services
from workers.celery_app import EMAIL_QUEUE, PLATFORM_QUEUE, get_app
from workers.lifecycle import publish_due_summaries, send_summary
from workers.pipeline import advance_case, handle_event, relay, send_email

app = get_app()
BUSY_RETRY_SECONDS = 1.0


@app.task(name="dunlink.process_event", bind=True, queue=PLATFORM_QUEUE, max_retries=20)  # type: ignore[untyped-decorator]
def process_event(self: Any, event_id: int) -> str:
    result = handle_event(services(), event_id, run_platform_steps=True)
    if result.busy:
        # The case is mid-step in another worker; try again shortly (the relay is the backstop).
        raise self.retry(countdown=BUSY_RETRY_SECONDS)
    return result.outcome


@app.task(name="dunlink.advance_case", queue=PLATFORM_QUEUE)  # type: ignore[untyped-decorator]
def advance_case_task(case_id: str) -> str:
    return advance_case(services(), case_id)


@app.task(name="dunlink.send_email", queue=EMAIL_QUEUE)  # type: ignore[untyped-decorator]
def send_email_task(case_id: str) -> str:
    return send_email(services(), case_id)


@app.task(name="dunlink.send_link", queue=EMAIL_QUEUE)  # type: ignore[untyped-decorator]
def send_link_task(case_id: str) -> str:
    """The email task's former name: wake-ups queued before an upgrade still find a worker."""
    return send_email(services(), case_id)


@app.task(name="dunlink.send_summary", queue=EMAIL_QUEUE)  # type: ignore[untyped-decorator]
def send_summary_task(vendor: str, day: str) -> str:
    return send_summary(services(), vendor, date.fromisoformat(day))


@app.task(name="dunlink.relay", queue=PLATFORM_QUEUE)  # type: ignore[untyped-decorator]
def relay_task() -> dict[str, int]:
    current = services()
    report = relay(current)
    return {"events": report.events, "cases": report.cases,
            "summaries": publish_due_summaries(current, current.clock())}
