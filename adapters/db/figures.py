"""What the workers have done, for ``/metrics``: counted in full once, then kept up to date from the rows
written since.

Counting every case, timeline event, email and webhook on every scrape costs more the longer an installation
runs (1.6 s per scrape at 1,000,000 cases). A :class:`Tally` counts everything once (the first scrape of an
api process), keeps the totals, and from then on reads only the rows written since it last read, adding what
they changed. Each api process keeps its own tally, so several give the same figures, and a restarted one
counts in full once more. What makes adding up exact:

* ``case_events`` rows are only ever added, and each says what it changed (the case's state before and after,
  the amount recovered it added), in the transaction that changed the case. Cases by state, the amount
  recovered and the outcomes of steps are the totals plus what the new rows say. Rows written by a version
  that did not say so yet (a worker not yet upgraded) make the tally count in full again.
* ``emails`` rows go from ``sending`` to ``sent`` once; the ids not sent yet are remembered and looked at
  again (a few in flight, plus those waiting for a person), until their case has been closed for
  :data:`LATE_SEND_GRACE`. A send refused for good leaves its email ``sending`` for ever, and nothing sends it
  once its case is closed; but a send under way as the case closed (it outlasted its lease, and a payment or
  a person closed the case meanwhile) still marks its email sent, so it is looked at for a while longer.
* a webhook event is published again by the relay at most once as far as the figure goes, and only while it
  is unprocessed; the unprocessed ids not yet published again are remembered and looked at again.
* the time from IPN to payment-link email covers the emails sent in the last 24 hours: each email is added
  once it is found sent and taken off once it is older, so a read does not go over the whole day again.

New rows are those with an id above the highest read, plus ids below it not seen yet. Ids come from a
sequence, and on PostgreSQL a transaction that took an id may commit after one that took a later id: a missing
id is looked for on every read until it shows up, or until every transaction that was running when it was
found missing has ended (the id was then rolled back and will never show up). SQLite has one writer at a time,
so its ids show up in order and a missing one never appears later. A transaction left open (a psql session
idle in a transaction) keeps every id found missing meanwhile in doubt, and each duplicate webhook delivery
burns an id: past :data:`MISSING_IDS_LIMIT` the tally stops looking for them one by one and counts in full at
each read, until that transaction has ended.

Every read runs in one transaction on one snapshot (``REPEATABLE READ`` on PostgreSQL), so the rows read and
the totals they are added to agree.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, and_, func, or_, select, text
from sqlalchemy import case as sql_case
from sqlalchemy.orm import Session

from adapters.db.repositories import CASE_EVENTS, CASES, EMAILS, INBOX
from domain.case import ENDS, Step

# Timeline kinds that record a platform step's success, and which step. A successful cancel of the
# replacement after the original was paid names the replacement order; the other "original_paid" events
# name an installment or nothing, so the "order" key tells them apart.
_STEP_DONE_KINDS = {"planned": "fetch_original", "nothing_owed": "fetch_original",
                    "replacement_created": "create_replacement", "original_cancelled": "cancel_original",
                    "replacement_withdrawn": "cancel_replacement", "expired": "expire"}
_STEP_FAILURE_KINDS = {"step_retry": "retry", "needs_person": "needs_person"}
# The step a failure names, and whether an "original_paid" names an order: the same test on every row,
# whether all of them are counted or only the new ones.
_NAMED_STEP = sql_case(*((CASE_EVENTS.c.detail.like(f'%"step": "{s.value}"%'), s.value) for s in Step), else_=None)
_NAMES_ORDER = CASE_EVENTS.c.detail.like('%"order": %')
_CLOSED = [state.value for state in ENDS]
# Published again by the relay: stamped at receipt, re-stamped (later) only by the relay.
_RELAYED = INBOX.c.enqueued_at > INBOX.c.received_at
_NOT_RELAYED = or_(INBOX.c.enqueued_at.is_(None), INBOX.c.enqueued_at <= INBOX.c.received_at)

# How far below the highest id the first read looks for ids of transactions still in flight.
FIRST_READ_GAP_WINDOW = 100_000
# A run of missing ids longer than this is a jump of the sequence (a restore, a setval), not rows in flight.
GAP_RUN_LIMIT = 10_000
# More ids in doubt than this cost a read more than counting in full does.
MISSING_IDS_LIMIT = 50_000
_IN_CHUNK = 1000
# Far longer than a send can outlast the close of its case (the lease, then the mail server's timeouts).
LATE_SEND_GRACE = timedelta(hours=24)
# Rows of as many columns as asked for.
_Rows = list[Row[*tuple[Any, ...]]]


@dataclass(slots=True)
class IpnToEmail:
    """Seconds from the IPN that opened a case to its payment-link email, for the emails sent in a window."""

    per_bucket: list[int]  # at or below each bound and above the one before; the last, above every bound
    seconds: float


@dataclass(slots=True)
class Figures:
    cases_by_state: dict[str, int]
    recovered_minor: dict[str, int]  # by currency
    step_outcomes: dict[tuple[str, str], int]  # (step, outcome) -> count
    emails_sent: int
    relayed_events: int
    ipn_to_email: IpnToEmail


# -- counted in full --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseFigures:
    by_state: dict[str, int]
    recovered_minor: dict[str, int]


def case_figures(session: Session) -> CaseFigures:
    """Cases by state and the amount recovered by currency, in one pass over ``cases``."""
    rows = session.execute(select(CASES.c.state, CASES.c.currency, func.count(), func.sum(CASES.c.recovered_minor))
                           .group_by(CASES.c.state, CASES.c.currency))
    by_state: dict[str, int] = {}
    recovered: dict[str, int] = {}
    for state, currency, count, amount in rows:
        by_state[state] = by_state.get(state, 0) + int(count)
        if currency is not None and amount:
            recovered[currency] = recovered.get(currency, 0) + int(amount)
    return CaseFigures(by_state, recovered)


def step_outcomes(session: Session) -> dict[tuple[str, str], int]:
    """Outcomes of platform and email steps read from the case timelines: ``(step, outcome) -> count``.

    ``outcome`` is ``ok``, ``retry`` (a transient failure, tried again later) or ``needs_person``. Only
    failures are found for email steps: the ledger counts emails sent (:func:`emails_by_status`).
    """
    kinds = [*_STEP_DONE_KINDS, *_STEP_FAILURE_KINDS]
    rows = session.execute(select(CASE_EVENTS.c.kind, _NAMED_STEP, func.count())
                           .where(CASE_EVENTS.c.kind.in_(kinds)).group_by(CASE_EVENTS.c.kind, _NAMED_STEP))
    outcomes: dict[tuple[str, str], int] = {}
    for kind, step, count in rows:
        _add_outcome(outcomes, kind, step, names_order=False, count=int(count))
    replacement_cancels = session.scalar(select(func.count()).select_from(CASE_EVENTS).where(
        CASE_EVENTS.c.kind == "original_paid", _NAMES_ORDER))
    _add_outcome(outcomes, "original_paid", None, names_order=True, count=int(replacement_cancels or 0))
    return outcomes


def _add_outcome(outcomes: dict[tuple[str, str], int], kind: str, step: str | None, *, names_order: bool,
                 count: int = 1) -> None:
    if kind in _STEP_DONE_KINDS:
        key = (_STEP_DONE_KINDS[kind], "ok")
    elif kind in _STEP_FAILURE_KINDS and step is not None:
        key = (step, _STEP_FAILURE_KINDS[kind])
    elif kind == "original_paid" and names_order:
        key = ("cancel_replacement", "ok")
    else:  # not a step, or handed to a person for a reason that is not a failed step (a payment to reconcile)
        return
    if count:
        outcomes[key] = outcomes.get(key, 0) + count


def emails_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(EMAILS.c.status, func.count()).group_by(EMAILS.c.status))
    return {status: int(count) for status, count in rows}


def relayed_events(session: Session) -> int:
    """Webhook events the relay had to publish again: stamped at receipt, re-stamped only by the relay."""
    return int(session.scalar(select(func.count()).select_from(INBOX).where(_RELAYED)) or 0)


def ipn_to_email(session: Session, *, sent_since: datetime | None = None,
                 email_ids: Sequence[int] | None = None) -> list[tuple[datetime, datetime]]:
    """``(received_at, sent_at)`` of the IPN that opened a case and of its payment-link email: for emails
    sent since ``sent_since`` (``ix_emails_sent_at``), or for the emails ``email_ids`` once they are sent."""
    query = (select(INBOX.c.received_at, EMAILS.c.sent_at)
             .join(INBOX, and_(INBOX.c.case_id == EMAILS.c.case_id, INBOX.c.outcome == "case_opened"))
             .where(EMAILS.c.step == Step.SEND_LINK.value, EMAILS.c.sent_at.is_not(None)))
    if sent_since is not None:
        query = query.where(EMAILS.c.sent_at >= sent_since)
    if email_ids is not None:
        query = query.where(EMAILS.c.id.in_(email_ids))
    return [(received, sent) for received, sent in session.execute(query)]


# -- kept up to date from new rows ------------------------------------------------------------------------


class _Transactions:
    """Whether a transaction that took a missing id may still commit, as of this read's snapshot."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._postgres = session.get_bind().dialect.name == "postgresql"
        # The oldest transaction still running when this read's snapshot was taken.
        self._oldest_running = int(session.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
                                   or 0) if self._postgres else 0
        self._mark: int | None = None

    def mark(self) -> int:
        """A transaction id above that of every transaction that has taken an id so far.

        This read's own transaction id, taken once: the writers of ``case_events``, ``emails`` and
        ``inbox_events`` write (and so get their transaction id) before they draw a row's id.
        """
        if not self._postgres:
            return 0
        if self._mark is None:
            self._mark = int(self._session.scalar(text("SELECT pg_current_xact_id()::text")) or 0)
        return self._mark

    def ended(self, mark: int) -> bool:
        """Every transaction below ``mark`` has ended (so what they wrote is in this snapshot)."""
        return not self._postgres or mark <= self._oldest_running


@dataclass(slots=True)
class _Cursor:
    """How far a table whose rows are only added has been read."""

    last_id: int = 0
    # Ids below last_id not read yet -> the transaction mark after which they will never show up.
    missing: dict[int, int] = field(default_factory=dict)

    def new_rows(self, session: Session, table: Table, *columns: ColumnElement[Any]) -> _Rows:
        """``(id, *columns)`` of the rows above the highest id read and of the missing ids that showed up.

        The missing ids are asked for a chunk at a time: as one ``IN`` list they made a statement with more
        parameters than PostgreSQL takes (65,535) once enough were in doubt, and every read after failed.
        """
        return [*session.execute(select(table.c.id, *columns).where(table.c.id > self.last_id)),
                *_among(session, table, self.missing, *columns)]

    def advance(self, ids: Iterable[int], transactions: _Transactions) -> None:
        """Take note of the ids read: the rows :meth:`new_rows` found in this read's snapshot."""
        above: list[int] = []
        for i in ids:
            if i > self.last_id:
                above.append(i)
            else:
                self.missing.pop(i, None)
        above.sort()
        self._note_missing(_runs_between([self.last_id, *above]), transactions)
        if above:
            self.last_id = above[-1]

    def _note_missing(self, ids: Iterable[int], transactions: _Transactions) -> None:
        for i in ids:
            self.missing[i] = transactions.mark()
        self.missing = {i: mark for i, mark in self.missing.items() if not transactions.ended(mark)}


def _runs_between(ordered: Sequence[int]) -> Iterable[int]:
    """The ids missing between consecutive ones of ``ordered``, leaving out jumps of the sequence."""
    for start, end in itertools.pairwise(ordered):
        if end - start - 1 <= GAP_RUN_LIMIT:
            yield from range(start + 1, end)


def _first_cursor(session: Session, table: Table, transactions: _Transactions) -> _Cursor:
    """Read up to the highest id, with the ids missing just below it (transactions that may still commit)."""
    last_id = int(session.scalar(select(func.max(table.c.id))) or 0)
    window = (select(table.c.id, func.lead(table.c.id).over(order_by=table.c.id).label("next_id"))
              .where(table.c.id > last_id - FIRST_READ_GAP_WINDOW).subquery())
    runs = session.execute(select(window.c.id, window.c.next_id).where(window.c.next_id > window.c.id + 1))
    cursor = _Cursor(last_id)
    cursor._note_missing((i for start, end in runs for i in _runs_between((start, end))), transactions)
    return cursor


@dataclass(slots=True)
class _RecentSends:
    """The IPN-to-email times of the payment-link emails sent within ``span`` of now, by bucket: an email is
    added once it is sent and taken off once it is older than the window, so a read costs what changed."""

    span: timedelta
    bounds: tuple[float, ...]
    oldest_first: list[tuple[datetime, int, int]] = field(default_factory=list)  # heap: (sent_at, µs, bucket)
    per_bucket: list[int] = field(default_factory=list)
    microseconds: int = 0

    def __post_init__(self) -> None:
        self.per_bucket = self.per_bucket or [0] * (len(self.bounds) + 1)

    def add(self, times: Iterable[tuple[datetime, datetime]]) -> None:
        for received, sent in times:
            microseconds = (sent - received) // timedelta(microseconds=1)
            bucket = bisect.bisect_left(self.bounds, microseconds / 1e6)
            heapq.heappush(self.oldest_first, (sent, microseconds, bucket))
            self.per_bucket[bucket] += 1
            self.microseconds += microseconds

    def keep_since(self, now: datetime) -> None:
        while self.oldest_first and self.oldest_first[0][0] < now - self.span:
            _, microseconds, bucket = heapq.heappop(self.oldest_first)
            self.per_bucket[bucket] -= 1
            self.microseconds -= microseconds

    def figures(self) -> IpnToEmail:
        return IpnToEmail(list(self.per_bucket), self.microseconds / 1e6)

    def copy(self) -> _RecentSends:
        return _RecentSends(self.span, self.bounds, list(self.oldest_first), list(self.per_bucket), self.microseconds)


@dataclass(slots=True)
class _Totals:
    figures: Figures
    events: _Cursor
    emails: _Cursor
    inbox: _Cursor
    unsent_emails: set[int]
    # Unprocessed webhook events not published again yet: the only ones that still may be.
    waiting_events: set[int]
    recent_sends: _RecentSends

    def copy(self) -> _Totals:
        f = self.figures
        return _Totals(
            Figures(dict(f.cases_by_state), dict(f.recovered_minor), dict(f.step_outcomes), f.emails_sent,
                    f.relayed_events, f.ipn_to_email),
            _Cursor(self.events.last_id, dict(self.events.missing)),
            _Cursor(self.emails.last_id, dict(self.emails.missing)),
            _Cursor(self.inbox.last_id, dict(self.inbox.missing)), set(self.unsent_emails), set(self.waiting_events),
            self.recent_sends.copy())


class Tally:
    """The figures of :class:`Figures`, counted in full on the first read and kept up to date after.

    One read at a time (the caller serialises them). A read that fails leaves the totals as they were.
    """

    def __init__(self, *, ipn_to_email_window: timedelta, ipn_to_email_bounds: Sequence[float]) -> None:
        self._recent_sends = _RecentSends(ipn_to_email_window, tuple(ipn_to_email_bounds))
        self._totals: _Totals | None = None
        self._untracked = 0

    def read(self, session: Session, *, now: datetime) -> Figures:
        """The figures as of this session's transaction, which must see one snapshot throughout.

        When the new rows cannot tell what they changed, the figures of the last read are given once more and
        the next read counts in full (``counted`` is False again). So does the read after one that found more
        than :data:`MISSING_IDS_LIMIT` ids missing (:attr:`untracked_missing_ids`).
        """
        transactions = _Transactions(session)
        if self._totals is None:
            totals: _Totals | None = _counted(session, transactions, self._recent_sends.copy(), now)
        else:
            totals = _added(session, self._totals.copy(), transactions, now)
            if totals is None:
                last, self._totals = self._totals, None
                return last.figures
        assert totals is not None
        totals.recent_sends.keep_since(now)
        totals.figures.ipn_to_email = totals.recent_sends.figures()
        missing = sum(len(cursor.missing) for cursor in (totals.events, totals.emails, totals.inbox))
        self._untracked = missing if missing > MISSING_IDS_LIMIT else 0
        self._totals = None if self._untracked else totals
        return totals.figures

    @property
    def counted(self) -> bool:
        """Whether the next read adds only what is new; if not, it counts everything."""
        return self._totals is not None

    @property
    def untracked_missing_ids(self) -> int:
        """How many ids the last read found missing, when too many to look for; 0 when it keeps track of them."""
        return self._untracked


def _counted(session: Session, transactions: _Transactions, recent_sends: _RecentSends, now: datetime) -> _Totals:
    cases = case_figures(session)
    recent_sends.add(ipn_to_email(session, sent_since=now - recent_sends.span))
    figures = Figures(cases.by_state, cases.recovered_minor, step_outcomes(session),
                      emails_by_status(session).get("sent", 0), relayed_events(session), recent_sends.figures())
    return _Totals(
        figures,
        events=_first_cursor(session, CASE_EVENTS, transactions),
        emails=_first_cursor(session, EMAILS, transactions),
        inbox=_first_cursor(session, INBOX, transactions),
        unsent_emails=set(session.scalars(select(EMAILS.c.id).where(EMAILS.c.status != "sent",
                                                                    ~_case_closed_before(now - LATE_SEND_GRACE)))),
        waiting_events=set(session.scalars(select(INBOX.c.id).where(INBOX.c.processed_at.is_(None), _NOT_RELAYED))),
        recent_sends=recent_sends)


def _added(session: Session, totals: _Totals, transactions: _Transactions, now: datetime) -> _Totals | None:
    """``totals`` plus what was written since they were read; None if the new rows cannot tell."""
    figures = totals.figures
    currency = select(CASES.c.currency).where(CASES.c.id == CASE_EVENTS.c.case_id).scalar_subquery()
    events = totals.events.new_rows(
        session, CASE_EVENTS, CASE_EVENTS.c.kind, CASE_EVENTS.c.state_before, CASE_EVENTS.c.state,
        CASE_EVENTS.c.recovered_minor_added, _NAMED_STEP, _NAMES_ORDER,
        sql_case((CASE_EVENTS.c.recovered_minor_added != 0, currency), else_=None))
    for _, kind, state_before, state, recovered, step, names_order, in_currency in events:
        if state is None:
            return None  # written by a version that did not record what its events changed
        if state_before != state:
            if state_before is not None:
                figures.cases_by_state[state_before] = figures.cases_by_state.get(state_before, 0) - 1
            figures.cases_by_state[state] = figures.cases_by_state.get(state, 0) + 1
        if recovered and in_currency is not None:
            figures.recovered_minor[in_currency] = figures.recovered_minor.get(in_currency, 0) + int(recovered)
        _add_outcome(figures.step_outcomes, kind, step, names_order=bool(names_order))
    totals.events.advance((row[0] for row in events), transactions)

    # Emails not sent at the last read, then the new ones: sent now, to look at again, or never to be sent.
    link = EMAILS.c.step == Step.SEND_LINK.value
    given_up = _case_closed_before(now - LATE_SEND_GRACE)
    emails = [*_among(session, EMAILS, totals.unsent_emails, EMAILS.c.status, link, given_up),
              *totals.emails.new_rows(session, EMAILS, EMAILS.c.status, link, given_up)]
    totals.emails.advance((email_id for email_id, *_ in emails if email_id not in totals.unsent_emails),
                          transactions)
    figures.emails_sent += sum(1 for _, status, *_ in emails if status == "sent")
    totals.unsent_emails = {email_id for email_id, status, _, gone in emails if status != "sent" and not gone}
    links_sent = sorted(email_id for email_id, status, is_link, _ in emails if status == "sent" and is_link)
    for start in range(0, len(links_sent), _IN_CHUNK):
        totals.recent_sends.add(ipn_to_email(session, email_ids=links_sent[start:start + _IN_CHUNK]))

    # Webhook events waiting at the last read, then the new ones: published again now, or still waiting.
    waiting = INBOX.c.processed_at.is_(None)
    inbox = [*_among(session, INBOX, totals.waiting_events, _RELAYED, waiting),
             *totals.inbox.new_rows(session, INBOX, _RELAYED, waiting)]
    totals.inbox.advance((event_id for event_id, *_ in inbox if event_id not in totals.waiting_events),
                         transactions)
    figures.relayed_events += sum(1 for _, relayed, _ in inbox if relayed)
    totals.waiting_events = {event_id for event_id, relayed, still in inbox if still and not relayed}
    return totals


def _case_closed_before(cutoff: datetime) -> ColumnElement[bool]:
    """Whether an email's case closed before ``cutoff``: if not sent by now, it never will be."""
    return (select(CASES.c.id).where(CASES.c.id == EMAILS.c.case_id, CASES.c.state.in_(_CLOSED),
                                     CASES.c.closed_at < cutoff).exists())


def _among(session: Session, table: Table, ids: Iterable[int], *columns: ColumnElement[Any]) -> _Rows:
    """``(id, *columns)`` of the rows of ``table`` with these ids, asked for a chunk at a time."""
    ordered = sorted(ids)
    return [row for start in range(0, len(ordered), _IN_CHUNK)
            for row in session.execute(select(table.c.id, *columns)
                                       .where(table.c.id.in_(ordered[start:start + _IN_CHUNK])))]
