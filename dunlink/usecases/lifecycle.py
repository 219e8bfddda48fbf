"""What falls due over days: reminders, final notices, expiry, and the vendors' daily summary emails.

Everything due later lives in the database with its due time. Beat wakes the relay every few seconds, which
publishes due work to the workers; ``dunlink due --now`` runs the same due work in-process at a chosen
instant, for operators catching up after downtime and for tests that move time.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage

import structlog

from adapters.email.message import compose, message_id
from adapters.email.port import MailError, TransientMailError
from adapters.email.render import ChartDay, PersonCase, SummaryFigures, VendorSummaryContext
from domain.case import RetryPolicy
from domain.summary import Figures, local_day_window, summarise, summary_due
from dunlink.config.vendors import Vendor
from dunlink.usecases.pipeline import advance_case, handle_event, send_email
from dunlink.usecases.ports import Services, Work, publish

log = structlog.get_logger("dunlink.lifecycle")
MAX_PASSES = 20
BATCH = 1000


@dataclass
class DueReport:
    events: int = 0
    case_runs: int = 0
    emails: int = 0
    summaries: int = 0

    def __str__(self) -> str:
        return (f"events processed: {self.events}, case steps run: {self.case_runs}, emails sent: {self.emails}, "
                f"summaries sent: {self.summaries}")


def run_due(services: Services, *, now: datetime) -> DueReport:
    """Run, in this process, everything that is due at ``now``; the clock reads ``now`` throughout.

    Each case sends at most one lifecycle email per run, so catching up after a long outage does not send a
    buyer every missed reminder at once.
    """
    fixed = services.at(now)
    report = DueReport()
    with fixed.uow() as uow:
        events = uow.inbox.pending(received_before=now, limit=BATCH)
    for event_id in events:
        outcome = handle_event(fixed, event_id)
        if not outcome.busy and outcome.outcome != "retry_later":
            report.events += 1
    emailed: set[str] = set()
    for _ in range(MAX_PASSES):
        with fixed.uow() as uow:
            due = [case_id for case_id, _ in uow.cases.due(now=now, limit=BATCH) if case_id not in emailed]
        if not due:
            break
        for case_id in due:
            report.case_runs += 1
            advance_case(fixed, case_id)
            with fixed.uow() as uow:
                case = uow.cases.get(case_id)
            if case is not None and case.next_step is not None and case.next_step.is_email and case.is_due(now):
                if send_email(fixed, case_id).endswith("_sent"):
                    report.emails += 1
                emailed.add(case_id)
    for vendor in fixed.vendors.values() if fixed.settings.vendor_summaries else ():
        day = summary_due(now, vendor.zone)
        if day is not None and send_summary(fixed, vendor.slug, day) == "sent":
            report.summaries += 1
    return report


# -- vendor summaries ---------------------------------------------------------------------------------------


# A summary that could not be sent waits 30 s, then twice as long after each failure, an hour at most.
SUMMARY_RETRY = RetryPolicy(base=timedelta(seconds=30), cap=timedelta(hours=1))


def publish_due_summaries(services: Services, now: datetime) -> int:
    """Publish a wake-up for each vendor whose summary for today is due and not yet sent (from the relay):
    not while a worker holds it, nor before the wait after a failed send is over."""
    published = 0
    for vendor in services.vendors.values() if services.settings.vendor_summaries else ():
        day = summary_due(now, vendor.zone)
        if day is None or services.summaries_sent.get(vendor.slug) == day:
            continue
        with services.uow() as uow:
            row = uow.summaries.get(vendor.slug, day)
            waits = row is not None and any(until is not None and until > now
                                            for until in (row.lease_until, row.next_attempt_at))
            status = row.status if row is not None else None
        if status == "sent":
            services.summaries_sent[vendor.slug] = day
            continue
        if not waits:
            publish(services, Work.SEND_SUMMARY, [vendor.slug, day.isoformat()])
            published += 1
    return published


def send_summary(services: Services, vendor_slug: str, day: date) -> str:
    """Send ``vendor``'s summary email of local day ``day`` once: the ledger row (vendor, day) is unique, and
    held under a claim while it is sent so no other worker sends it too; a failed send is tried again after
    a wait that doubles each time (:data:`SUMMARY_RETRY`)."""
    vendor = services.vendors.get(vendor_slug)
    if vendor is None:
        return "unknown_vendor"
    now = services.clock()
    until = now + services.lease
    with services.uow() as uow:
        row = uow.summaries.claim(vendor=vendor.slug, day=day, message_id=_summary_message_id(services, vendor, day),
                                  now=now, until=until)
        attempts = row.attempts if row is not None else 0
        uow.commit()
        if row is None:
            held = uow.summaries.get(vendor.slug, day)
            return "already_sent" if held is None or held.status == "sent" else "not_now"
    try:
        services.mail.send(_summary_message(services, vendor, day, now))
    except Exception as exc:
        return _summary_failed(services, vendor.slug, day, exc, held_until=until, attempt=attempts + 1)
    with services.uow() as uow:
        uow.summaries.mark_sent(vendor.slug, day, now=services.clock())
        uow.commit()
    log.info("summary_sent", vendor=vendor.slug, day=day.isoformat())
    return "sent"


def _summary_failed(services: Services, slug: str, day: date, exc: Exception, *, held_until: datetime,
                    attempt: int) -> str:
    """Let go of the summary until its next try; a mail server's permanent refusal is tried again too (the
    address may be fixed), only as rarely as the longest wait."""
    permanent = isinstance(exc, MailError) and not isinstance(exc, TransientMailError)
    error = f"{type(exc).__name__}: {exc}"[:500]
    at = services.clock() + (SUMMARY_RETRY.cap if permanent else SUMMARY_RETRY.delay(attempt, random.random()))
    with services.uow() as uow:
        uow.summaries.retry_later(slug, day, held_until=held_until, at=at, error=error, permanent=permanent)
        uow.commit()
    fields = {"vendor": slug, "day": day.isoformat(), "attempt": attempt, "next_attempt_at": at.isoformat(),
              "error": error[:200]}
    if permanent:
        log.error("summary_failed", **fields)
        return "failed"
    log.warning("summary_retry", **fields)
    return "retry_later"


def _summary_message_id(services: Services, vendor: Vendor, day: date) -> str:
    """The summary's Message-ID, the same as :func:`_summary_message` gives it, known before it is rendered."""
    return message_id(case_id=f"summary-{vendor.slug}", step=f"summary-{day.isoformat()}",
                      from_address=services.settings.mail_from)


def _figures(figures: Figures) -> SummaryFigures:
    return SummaryFigures(figures.opened, figures.links_sent, figures.recovered, figures.recovered_amount,
                          figures.lost, figures.recovery_rate)


def _summary_message(services: Services, vendor: Vendor, today: date, now: datetime) -> EmailMessage:
    since = local_day_window(today - timedelta(days=31), vendor.zone).start
    with services.uow() as uow:
        cases = uow.summaries.cases_for(vendor.slug, since=since)
    currencies = Counter(case.currency for case in cases if case.currency)
    currency = currencies.most_common(1)[0][0] if currencies else "EUR"
    summary = summarise(cases, today=today, zone=vendor.zone, currency=currency)
    context = VendorSummaryContext(
        vendor_name=vendor.name, locale=vendor.locale, day=summary.day, yesterday=_figures(summary.yesterday),
        last_30_days=_figures(summary.last_30_days), waiting=summary.waiting,
        needs_person=tuple(PersonCase(p.case_id, p.order_id, p.reason_code, p.params) for p in summary.needs_person),
        chart=tuple(ChartDay(day, amount) for day, amount in summary.chart), currency=currency,
        accent_colour=vendor.accent_colour, logo_url=vendor.logo_url, imprint=vendor.imprint,
        support_url=vendor.support_url)
    rendered = services.renderer.vendor_summary(context)
    return compose(rendered=rendered, case_id=f"summary-{vendor.slug}", step=f"summary-{today.isoformat()}",
                   to_address=vendor.summary_email, to_name=vendor.name, from_address=services.settings.mail_from,
                   from_name=vendor.name, reply_to=None, sent_at=now)
