"""Prometheus metrics (prometheus-client) served by the webhook app at ``GET /metrics``.

Where the figures come from, and why:

* **Webhooks by vendor, event and answer** are counted in the api process itself: the api is the one
  that answers them; so is the number of deliveries each commit of the webhook's writer stored.
* **Everything done by workers is read from the database at scrape time**: cases by state, the amount
  recovered by currency, emails sent and failed, platform calls by step and outcome, events re-published
  by the relay, and the time from IPN to email. Workers are separate processes, often on other machines,
  and Celery's prefork pool runs each task in a child process; in-process counters there would need
  prometheus-client's multiprocess mode plus one more port to scrape per worker machine, and would reset
  whenever a child is recycled. The database already records every outcome (it is the source of truth), so
  one scrape of any api instance gives the same, complete answer, however many workers run where.

  An api process counts all of it once, at its first scrape, and from then on reads only the rows written
  since its last scrape and adds them (:mod:`adapters.db.figures`): a scrape costs what was done since the
  last one, not what was ever done. Counters carried forward this way only grow; after a restart the
  process counts in full again, which gives the same values.

  - platform calls: from the case timelines (``step_retry`` and ``needs_person`` name the failed step;
    the events that move a case forward name the step that succeeded);
  - emails sent: the ``emails`` ledger (``status = 'sent'``); emails failed: failed attempts of the
    email steps in the timelines;
  - relay re-enqueues: webhook events the relay published again (it is the only writer of
    ``inbox_events.enqueued_at``). A case woken by the relay leaves no row, so those are not counted;
  - IPN → email: ``emails.sent_at − inbox_events.received_at`` of the event that opened the case, for
    emails sent in the last 24 hours, exposed as a gauge histogram (a sliding window, not a counter:
    use ``histogram_quantile`` on the buckets directly, not on ``rate()``).

A scrape while the database is down still answers: the in-process counters plus ``dunlink_database_up 0``.
So does one that comes while another is still reading, after waiting :data:`SCRAPE_WAIT_SECONDS` for it: a
scrape stuck on a lock or a dead connection must not hold up the ones after it, each taking a thread of the
pool that ``/healthz`` runs in as well. The scrapes read over connections of their own, which give up on a
database host gone without a word (:func:`scrape_sessions`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from adapters.db import figures as database_figures
from adapters.db.engine import make_engine, make_session_factory
from domain.case import CaseState, Step

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from dunlink.runtime.bootstrap import Services

REGISTRY = CollectorRegistry(auto_describe=True)
WEBHOOKS = Counter("dunlink_webhooks", "Webhooks received, by vendor, event and HTTP answer",
                   ["vendor", "event", "answer"], registry=REGISTRY)
# The webhook's group commit: how many deliveries each commit stored (small under light load, larger when busy).
WEBHOOK_BATCH_SIZE = Histogram("dunlink_webhook_batch_size", "Deliveries stored by one commit of the webhook's writer",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY)
# What the api's connection limits closed (dunlink/webapp/serving.py): a flood of slow or idle clients shows here.
API_CONNECTIONS_CLOSED = Counter(
    "dunlink_api_connections_closed",
    "Connections the api closed for exceeding a limit, by reason: header_timeout, body_timeout, head_too_large, "
    "evicted (the oldest waiting one, to make room), over_limit (every connection busy)",
    ["reason"], registry=REGISTRY)

IPN_TO_EMAIL_WINDOW = timedelta(hours=24)
# Seconds; a healthy pipeline sends within seconds, a retried one within minutes, a stuck one much later.
IPN_TO_EMAIL_BUCKETS: tuple[float, ...] = (1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
PLATFORM_STEPS = frozenset(step.value for step in Step if not step.is_email)
EMAIL_STEPS = frozenset(step.value for step in Step if step.is_email)
SCRAPE_STATEMENT_TIMEOUT_MS = 5000
# The first scrape of a process counts everything once; on a large database that takes longer than a scrape.
FULL_COUNT_STATEMENT_TIMEOUT_MS = 120_000
# How long a scrape waits for the one before it to finish reading before answering without the database.
SCRAPE_WAIT_SECONDS = 3.0
# libpq's TCP keepalives: a database host gone without a word (no FIN, no RST) fails a scrape waiting for its
# answer in about half a minute, not after the kernel's default two hours; tcp_user_timeout (ms) bounds how
# long data sent may stay unacknowledged, which keepalives do not cover.
_SCRAPE_CONNECT_ARGS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                        "keepalives_count": 3, "tcp_user_timeout": 30_000}

log = structlog.get_logger("dunlink.metrics")


def histogram_buckets(per_bucket: Sequence[int], bounds: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs ending in ``+Inf``, as Prometheus histograms expose them, from the counts
    at or below each bound and above the one before (one more count at the end: above every bound)."""
    cumulative = list(itertools.accumulate(per_bucket))
    return [*((_le(bound), float(count)) for bound, count in zip(bounds, cumulative, strict=False)),
            ("+Inf", float(cumulative[-1]))]


def _le(bound: float) -> str:
    return str(float(bound))


class DatabaseCollector(Collector):
    """Figures about the work done by workers, read from the database on every scrape.

    Keep one per process: it carries its totals from one scrape to the next.
    """

    def __init__(self, session_factory: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self._session_factory = session_factory
        self._clock = clock
        self._tally = database_figures.Tally(ipn_to_email_window=IPN_TO_EMAIL_WINDOW,
                                             ipn_to_email_bounds=IPN_TO_EMAIL_BUCKETS)
        self._lock = threading.Lock()  # scrapes that overlap read one after the other
        self._said_untracked = False

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        yield GaugeMetricFamily("dunlink_database_up", "1 if the database answered this scrape",
                                value=0 if families is None else 1)
        yield from families or ()

    def _families(self) -> list[Metric] | None:
        """The database's figures, or None (said in the log) if they cannot be read now."""
        if not self._lock.acquire(timeout=SCRAPE_WAIT_SECONDS):
            log.warning("metrics_scrape_still_reading", waited_seconds=SCRAPE_WAIT_SECONDS,
                        why="another scrape is still reading the database")
            return None
        try:
            return self._read()
        except SQLAlchemyError as exc:
            log.warning("metrics_database_unavailable", error=type(exc).__name__)
            return None
        finally:
            self._lock.release()

    def _read(self) -> list[Metric]:
        counted = self._tally.counted  # before the read, which may count in full
        with self._session_factory() as session:
            if session.get_bind().dialect.name == "postgresql":
                # One snapshot for every statement, so the rows read since and the totals agree.
                session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                timeout = SCRAPE_STATEMENT_TIMEOUT_MS if counted else FULL_COUNT_STATEMENT_TIMEOUT_MS
                session.execute(text(f"SET LOCAL statement_timeout = {timeout}"))
            work = self._tally.read(session, now=self._clock())
            session.rollback()
        untracked = self._tally.untracked_missing_ids
        if untracked and not self._said_untracked:  # once, not at every scrape for as long as it lasts
            log.warning("metrics_missing_ids_untracked", missing=untracked, limit=database_figures.MISSING_IDS_LIMIT,
                        why="a transaction left open keeps them in doubt: counting in full at each scrape till it ends")
        self._said_untracked = bool(untracked)
        if not counted:
            log.info("metrics_counted_in_full")
        elif not self._tally.counted and not untracked:
            log.warning("metrics_count_again", why="timeline rows from a version that did not say what they changed")
        steps = work.step_outcomes

        cases = GaugeMetricFamily("dunlink_cases", "Dunning cases by state", labels=["state"])
        for state in CaseState:
            cases.add_metric([state.value], work.cases_by_state.get(state.value, 0))

        recovered = CounterMetricFamily(
            "dunlink_recovered_minor_units",
            "Amount recovered from paid replacement orders, in minor units (cents) of the currency",
            labels=["currency"])
        for currency, amount in sorted(work.recovered_minor.items()):
            recovered.add_metric([currency], amount)

        sent_emails = CounterMetricFamily(
            "dunlink_emails", "Emails to buyers: sent (taken by the mail server) and failed attempts",
            labels=["outcome"])
        sent_emails.add_metric(["sent"], work.emails_sent)
        email_failures = sum(count for (step, outcome), count in steps.items()
                             if step in EMAIL_STEPS and outcome != "ok")
        sent_emails.add_metric(["failed"], email_failures)

        platform_calls = CounterMetricFamily(
            "dunlink_platform_calls",
            "Platform order-API steps by outcome: ok, retry (transient error) or needs_person",
            labels=["step", "outcome"])
        for (step, outcome), count in sorted(steps.items()):
            if step in PLATFORM_STEPS:
                platform_calls.add_metric([step, outcome], count)

        relay = CounterMetricFamily("dunlink_relay_requeued_events",
                                    "Webhook events the relay published again because no message carried them")
        relay.add_metric([], work.relayed_events)

        histogram = GaugeHistogramMetricFamily(
            "dunlink_ipn_to_email_seconds",
            "Seconds from the IPN that opened a case to its payment-link email, for emails sent in the last 24 h",
            buckets=histogram_buckets(work.ipn_to_email.per_bucket, IPN_TO_EMAIL_BUCKETS),
            gsum_value=work.ipn_to_email.seconds)
        return [cases, recovered, sent_emails, platform_calls, relay, histogram]


def database_registry(services: Services) -> tuple[CollectorRegistry, Callable[[], None]]:
    """The registry of the database's figures for this process, built once (its collector keeps totals), and
    what closes the scrapes' own connections when the process ends."""
    sessions = scrape_sessions(services)
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(sessions, services.clock))
    engine = sessions.kw["bind"]
    return registry, (engine.dispose if engine is not services.engine else lambda: None)


def scrape_sessions(services: Services) -> sessionmaker[Session]:
    """Sessions for the scrapes: on PostgreSQL over connections of their own that give up on a silent peer.

    The webhook's engine, shared with everything else the api does, is left as it is. One connection is
    enough, as scrapes read one at a time; it is kept, since opening one costs as much as a scrape that finds
    nothing new. SQLite has no peer to lose, and its engine begins the one transaction a read needs (see
    ``adapters.db.engine``).
    """
    url = services.engine.url
    if url.get_backend_name() != "postgresql":
        return services.session_factory
    return make_session_factory(make_engine(url, pool_size=1, max_overflow=0, connect_args=_SCRAPE_CONNECT_ARGS))


def render_metrics(database: CollectorRegistry) -> tuple[bytes, str]:
    """The text the Prometheus scraper reads: in-process counters, then the database's figures."""
    return generate_latest(REGISTRY) + generate_latest(database), CONTENT_TYPE_LATEST
