"""Repositories: the dunning case, the webhook inbox and the email ledger, on SQLAlchemy sessions.

Cases travel as the domain's ``DunningCase``; rows never leave this module, so the domain stays free of
the ORM and the schema can change without touching a rule.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Table, and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.selectable import GenerativeSelect

from adapters.db.tables import CLOSED_STATES, CaseEventRow, CaseRow, EmailRow, InboxEvent, UTCDateTime
from domain.case import Buyer, CaseEvent, CaseState, DunningCase, Step
from domain.money import Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from domain.policy import ReplacementBy, ReplacementKind

UTC_TIME = UTCDateTime()
# A hand-made replacement whose link is known and whose case still waits: its buyer may pay it.
_LINKED = (CaseState.AWAITING_ORIGINAL_CANCEL, CaseState.ORIGINAL_CANCELLED, CaseState.AWAITING_PAYMENT)
# How long published work may wait in a queue before the relay publishes it again.
REQUEUE_AFTER = timedelta(seconds=30)

# The tables behind the mappings. The pipeline's hot path reads and writes cases with single Core
# statements on these (no identity map, no flush): a case step costs one UPDATE and one INSERT.
CASES = cast(Table, CaseRow.__table__)
CASE_EVENTS = cast(Table, CaseEventRow.__table__)
EMAILS = cast(Table, EmailRow.__table__)
INBOX = cast(Table, InboxEvent.__table__)
# The predicate of the partial unique index ``uq_cases_open_order``, written as the index is, so that
# ``ON CONFLICT`` finds the index on SQLite and PostgreSQL alike.
_OPEN_CASE_WHERE = text("state NOT IN ('recovered', 'resolved', 'lost')")



class _Keep:
    """``save(lease_until=KEEP)``: leave the lease as it is."""


KEEP = _Keep()

# The hot path's statements, built once with bound parameters: SQLAlchemy then reuses their compiled form
# without building and hashing a new statement on every call.
_CASE_COLUMNS = tuple(c.name for c in CASES.c if c.name not in ("id", "lease_until", "relayed_at"))
_CASE_VALUES = {name: bindparam(f"v_{name}", type_=CASES.c[name].type) for name in _CASE_COLUMNS}
_GET_CASE = select(CASES).where(CASES.c.id == bindparam("case_id"))
# Read to be written in the same transaction: waits for a writer of the row to commit and reads its result.
_LOCK_CASE = _GET_CASE.with_for_update()
_CLAIM = (update(CASES).where(CASES.c.id == bindparam("case_id"),
                              or_(CASES.c.lease_until.is_(None), CASES.c.lease_until <= bindparam("now")))
          .values(lease_until=bindparam("until")))
_CLAIM_CASE = _CLAIM.returning(*CASES.c)
_INSERT_EVENTS = insert(CASE_EVENTS)


def _save_statement(*, set_lease: bool, guarded: bool) -> Any:
    statement = update(CASES).where(CASES.c.id == bindparam("case_id"))
    if guarded:
        statement = statement.where(CASES.c.lease_until == bindparam("expect_lease"))
    values: dict[str, Any] = dict(_CASE_VALUES)
    if set_lease:
        values["lease_until"] = bindparam("v_lease_until", type_=CASES.c.lease_until.type)
    return statement.values(values)


_SAVE_CASE = {(set_lease, guarded): _save_statement(set_lease=set_lease, guarded=guarded)
              for set_lease in (False, True) for guarded in (False, True)}


def _add_case_statement(insert_: Any) -> Any:
    values: dict[str, Any] = dict(_CASE_VALUES)
    for name in ("id", "lease_until", "relayed_at"):
        values[name] = bindparam(f"v_{name}", type_=CASES.c[name].type)
    return (insert_(CASES).values(values)
            .on_conflict_do_nothing(index_elements=["vendor", "original_order_id"], index_where=_OPEN_CASE_WHERE)
            .returning(CASES.c.id))


_ADD_CASE = {"postgresql": _add_case_statement(postgresql_insert), "sqlite": _add_case_statement(sqlite_insert)}


def _record_attempt_statement(insert_: Any) -> Any:
    values = {name: bindparam(f"v_{name}", type_=EMAILS.c[name].type)
              for name in ("case_id", "step", "message_id", "recipient", "created_at")}
    return (insert_(EMAILS).values(status="sending", attempts=1, **values)
            .on_conflict_do_update(index_elements=["case_id", "step"], set_={"attempts": EMAILS.c.attempts + 1}))


_RECORD_ATTEMPT = {"postgresql": _record_attempt_statement(postgresql_insert),
                   "sqlite": _record_attempt_statement(sqlite_insert)}
# The first time it was marked sent stays: a second send of the same message (a lease that ran out mid-send)
# does not move the time the buyer first had it.
_MARK_SENT = (update(EMAILS).where(EMAILS.c.case_id == bindparam("w_case_id"), EMAILS.c.step == bindparam("w_step"))
              .values(status="sent", sent_at=func.coalesce(EMAILS.c.sent_at, bindparam("v_sent_at"))))
_GET_EVENT = select(INBOX).where(INBOX.c.id == bindparam("event_id"))
_LOCK_EVENT = _GET_EVENT.with_for_update()
_MARK_PROCESSED = (update(INBOX).where(INBOX.c.id == bindparam("event_id"))
                   .values(processed_at=bindparam("v_processed_at"), outcome=bindparam("v_outcome"),
                           case_id=bindparam("v_case_id")))
EVENT_FAILED = "failed"
_EVENT_ATTEMPT = (update(INBOX).where(INBOX.c.id == bindparam("event_id"))
                  .values(attempts=INBOX.c.attempts + 1, error=bindparam("v_error")))
_EVENT_FAILED = _EVENT_ATTEMPT.values(processed_at=bindparam("v_processed_at"), outcome=EVENT_FAILED,
                                      case_id=bindparam("v_case_id"))


class DuplicateOpenCase(Exception):
    """Another open case already follows this original order; the caller should attach to it instead."""

    def __init__(self, vendor: str, order_id: str) -> None:
        super().__init__(f"an open case already exists for {vendor}/{order_id}")
        self.vendor, self.order_id = vendor, order_id


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    created: bool


@dataclass(frozen=True, slots=True)
class InboxRecord:
    """A stored webhook event as the use cases read it: what arrived, and what became of it."""

    id: int
    vendor: str
    event_type: str
    dedup_key: str
    order_id: str | None
    body: str
    received_at: datetime
    processed_at: datetime | None
    outcome: str | None
    case_id: str | None
    attempts: int
    error: str | None

    @classmethod
    def of(cls, row: Any) -> InboxRecord:
        return cls(id=row.id, vendor=row.vendor, event_type=row.event_type, dedup_key=row.dedup_key,
                   order_id=row.order_id, body=row.body, received_at=row.received_at,
                   processed_at=row.processed_at, outcome=row.outcome, case_id=row.case_id,
                   attempts=row.attempts or 0, error=row.error)


_Query = TypeVar("_Query", bound=GenerativeSelect)


def _skip_locked(session: Session, query: _Query) -> _Query:
    # SKIP LOCKED lets several relays share the backlog on PostgreSQL; SQLite serialises writers anyway.
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


class InboxRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, *, vendor: str, event_type: str, dedup_key: str, order_id: str | None, body: str,
            now: datetime) -> StoredEvent:
        """Store an event once per deduplication key; a duplicate delivery returns the stored one.

        One ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` on both backends: the database settles races
        between concurrent deliveries, and the webhook's hot path costs a single statement. The row is
        stamped as published now, since the webhook publishes it right after the commit; the relay only
        publishes it again if it is still unprocessed well after that.
        """
        dialect = self.session.get_bind().dialect.name
        insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = (insert(InboxEvent).values(vendor=vendor, event_type=event_type, dedup_key=dedup_key,
                                               order_id=order_id, body=body, received_at=now, enqueued_at=now)
                     .on_conflict_do_nothing(index_elements=["vendor", "event_type", "dedup_key"])
                     .returning(InboxEvent.id))
        created = self.session.scalar(statement)
        if created is not None:
            return StoredEvent(int(created), created=True)
        found = self._find(vendor, event_type, dedup_key)
        assert found is not None
        return StoredEvent(found, created=False)

    def _find(self, vendor: str, event_type: str, dedup_key: str) -> int | None:
        return self.session.scalar(select(InboxEvent.id).where(
            InboxEvent.vendor == vendor, InboxEvent.event_type == event_type, InboxEvent.dedup_key == dedup_key))

    def get(self, event_id: int) -> InboxRecord | None:
        """The stored event's row (read by attribute, as ``InboxEvent``), or None."""
        row = self.session.connection().execute(_GET_EVENT, {"event_id": event_id}).first()
        return InboxRecord.of(row) if row is not None else None

    def lock(self, event_id: int) -> InboxRecord | None:
        """:meth:`get`, holding the row until the transaction ends: a second handler of the same event waits
        here and then finds it processed (PostgreSQL; SQLite runs one writing transaction at a time anyway)."""
        row = self.session.connection().execute(_LOCK_EVENT, {"event_id": event_id}).first()
        return InboxRecord.of(row) if row is not None else None

    def mark_processed(self, event_id: int, *, outcome: str, case_id: str | None, now: datetime) -> None:
        self.session.connection().execute(_MARK_PROCESSED, {"event_id": event_id, "v_processed_at": now,
                                                            "v_outcome": outcome, "v_case_id": case_id})

    def record_attempt(self, event_id: int, *, error: str) -> None:
        """Count a failed attempt at the event and keep its error; it stays pending, to be tried again."""
        self.session.connection().execute(_EVENT_ATTEMPT, {"event_id": event_id, "v_error": error})

    def mark_failed(self, event_id: int, *, error: str, case_id: str | None, now: datetime) -> None:
        """The event failed for good: processed, with the outcome ``failed`` and the error, never re-sent."""
        self.session.connection().execute(_EVENT_FAILED, {"event_id": event_id, "v_error": error,
                                                          "v_processed_at": now, "v_case_id": case_id})

    def pending(self, *, received_before: datetime, limit: int) -> list[int]:
        """Unprocessed events older than ``received_before``: work that no message may be carrying."""
        query = (select(InboxEvent.id).where(InboxEvent.processed_at.is_(None),
                                             InboxEvent.received_at <= received_before)
                 .order_by(InboxEvent.received_at).limit(limit))
        return list(self.session.scalars(_skip_locked(self.session, query)))

    def take_for_relay(self, *, received_before: datetime, now: datetime, limit: int) -> list[int]:
        """Pending events not published in the last ``REQUEUE_AFTER``; stamps them as published now."""
        query = (select(InboxEvent.id).where(
            InboxEvent.processed_at.is_(None), InboxEvent.received_at <= received_before,
            or_(InboxEvent.enqueued_at.is_(None), InboxEvent.enqueued_at <= now - REQUEUE_AFTER))
            .order_by(InboxEvent.received_at).limit(limit))
        ids = list(self.session.scalars(_skip_locked(self.session, query)))
        if ids:
            self.session.execute(update(InboxEvent).where(InboxEvent.id.in_(ids)).values(enqueued_at=now))
        return ids

    def for_case(self, case_id: str) -> list[InboxRecord]:
        return [InboxRecord.of(row) for row in self.session.scalars(
            select(InboxEvent).where(InboxEvent.case_id == case_id).order_by(InboxEvent.id))]

    def first_received(self, vendor: str, order_id: str) -> datetime | None:
        """When the first event of the vendor's order arrived, if any did."""
        found = self.session.scalar(select(func.min(InboxEvent.received_at)).where(
            InboxEvent.vendor == vendor, InboxEvent.order_id == order_id))
        return UTC_TIME.process_result_value(found, self.session.get_bind().dialect) if found is not None else None

    def reopen_unmatched_payments(self, vendor: str, order_id: str) -> list[int]:
        """Payments on the vendor's order that matched no case, to be applied again now that a case names the
        order (the vendor gave its id after the buyer paid)."""
        ids = list(self.session.scalars(select(InboxEvent.id).where(
            InboxEvent.vendor == vendor, InboxEvent.order_id == order_id, InboxEvent.event_type == "payment.made",
            InboxEvent.outcome == "no_case")))
        if ids:
            self.session.execute(update(InboxEvent).where(InboxEvent.id.in_(ids)).values(
                processed_at=None, outcome=None, case_id=None, enqueued_at=None))
        return ids

    def bodies_for_order(self, vendor: str, order_id: str, *, limit: int = 2000) -> list[str]:
        """Every stored IPN body of the vendor's order, oldest first: what a plan is rebuilt from where no API
        can be asked. Bounded: an order has at most a few IPNs per installment."""
        return list(self.session.scalars(select(InboxEvent.body).where(
            InboxEvent.vendor == vendor, InboxEvent.order_id == order_id).order_by(InboxEvent.id).limit(limit)))


class CaseRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _execute(self, statement: Executable, parameters: Any = None) -> Result[Any]:
        return self.session.connection().execute(statement, parameters)

    def add(self, case: DunningCase, *, lease_until: datetime | None = None) -> None:
        """Store a new case, with its lease taken when the caller goes on to its first step at once.

        One ``INSERT ... ON CONFLICT DO NOTHING`` on the open-case index: a second open case for the same
        order is refused by the database, without a savepoint, as :class:`DuplicateOpenCase`.
        """
        parameters = _case_parameters(case)
        # relayed_at: its first wake-up is published on commit.
        parameters.update(v_id=case.id, v_lease_until=lease_until, v_relayed_at=case.opened_at)
        statement = _ADD_CASE[self.session.get_bind().dialect.name]
        if self._execute(statement, parameters).first() is None:
            raise DuplicateOpenCase(case.vendor, case.original_order_id)
        self._append_events(case)

    def get(self, case_id: str) -> DunningCase | None:
        row = self._execute(_GET_CASE, {"case_id": case_id}).first()
        return _from_row(row) if row is not None else None

    def lock(self, case_id: str) -> tuple[DunningCase, datetime | None] | None:
        """The case and the end of its lease (None: nobody holds it), to be written in this transaction: holds
        its row until the transaction ends, after waiting for a transaction writing it to end, so what is read
        is what the write is based on."""
        row = self._execute(_LOCK_CASE, {"case_id": case_id}).first()
        return (_from_row(row), row.lease_until) if row is not None else None

    def claim_case(self, case_id: str, *, now: datetime, until: datetime) -> DunningCase | None:
        """Take the case's lease and read it, in one ``UPDATE ... RETURNING``; None if another holds it."""
        row = self._execute(_CLAIM_CASE, {"case_id": case_id, "now": now, "until": until}).first()
        return _from_row(row) if row is not None else None

    def save(self, case: DunningCase, *, lease_until: datetime | _Keep | None = KEEP,
             expect_lease: datetime | None = None) -> bool:
        """Write the case and append its new timeline events, in one UPDATE and one INSERT.

        ``lease_until`` sets the lease in the same statement (None releases it). With ``expect_lease`` the
        write happens only while the lease is still the one the caller took: False means it expired and the
        case may have moved on; nothing is written then.
        """
        parameters = _case_parameters(case)
        parameters["case_id"] = case.id
        set_lease = not isinstance(lease_until, _Keep)
        if set_lease:
            parameters["v_lease_until"] = lease_until
        if expect_lease is not None:
            parameters["expect_lease"] = expect_lease
        statement = _SAVE_CASE[(set_lease, expect_lease is not None)]
        result = cast(CursorResult[Any], self._execute(statement, parameters))
        if not result.rowcount:
            if expect_lease is None:
                raise KeyError(case.id)
            return False
        self._append_events(case)
        return True

    def _append_events(self, case: DunningCase) -> None:
        if case.events:
            self._execute(_INSERT_EVENTS, [
                {"case_id": case.id, "at": event.at, "kind": event.kind,
                 "detail": json.dumps(event.detail, sort_keys=True, default=str),
                 "state_before": event.state_before.value if event.state_before else None,
                 "state": event.state.value if event.state else None,
                 "recovered_minor_added": event.recovered_minor_added} for event in case.events])
        case.events.clear()

    def open_for_order(self, vendor: str, order_id: str) -> DunningCase | None:
        row = self._execute(select(CASES).where(
            CASES.c.vendor == vendor, CASES.c.original_order_id == order_id,
            CASES.c.state.not_in(CLOSED_STATES))).first()
        return _from_row(row) if row is not None else None

    def latest_for_order(self, vendor: str, order_id: str) -> DunningCase | None:
        row = self.session.scalars(select(CaseRow).where(
            CaseRow.vendor == vendor, CaseRow.original_order_id == order_id)
            .order_by(CaseRow.opened_at.desc())).first()
        return _from_row(row) if row is not None else None

    def by_replacement(self, vendor: str, order_id: str) -> DunningCase | None:
        row = self._execute(select(CASES).where(
            CASES.c.vendor == vendor, CASES.c.replacement_order_id == order_id)).first()
        return _from_row(row) if row is not None else None

    def linked_cases_of_buyer(self, vendor: str, *, buyer_email: str, product_id: str) -> list[DunningCase]:
        """The vendor's open cases with a hand-made link, for this buyer (email without case) and product: where a
        payment on an order dunlink never saw made may belong (the buyer can pay the link before the vendor
        confirms the original cancelled, or before the buyer's email)."""
        waiting = [state.value for state in _LINKED]
        query = select(CASES).where(
            CASES.c.vendor == vendor, CASES.c.replacement_by == "vendor", CASES.c.payment_url.is_not(None),
            or_(CASES.c.state.in_(waiting),
                and_(CASES.c.state == CaseState.NEEDS_PERSON.value, CASES.c.resume_state.in_(waiting))),
            func.lower(CASES.c.buyer_email) == buyer_email.strip().lower(), CASES.c.product_id == product_id)
        return [_from_row(row) for row in self._execute(query.limit(20))]

    def claim(self, case_id: str, *, now: datetime, until: datetime) -> bool:
        """Take the case's lease so one worker at a time performs its next step; False if another holds it."""
        result = cast(CursorResult[Any], self._execute(_CLAIM, {"case_id": case_id, "now": now, "until": until}))
        return bool(result.rowcount)

    def release(self, case_id: str) -> None:
        self._execute(update(CASES).where(CASES.c.id == case_id).values(lease_until=None))

    def due(self, *, now: datetime, limit: int) -> list[tuple[str, str]]:
        """Cases whose next step is due and that nobody holds: (id, state)."""
        query = (select(CaseRow.id, CaseRow.state).where(
            CaseRow.next_attempt_at.is_not(None), CaseRow.next_attempt_at <= now,
            or_(CaseRow.lease_until.is_(None), CaseRow.lease_until <= now))
            .order_by(CaseRow.next_attempt_at).limit(limit))
        return [(row[0], row[1]) for row in self.session.execute(_skip_locked(self.session, query))]

    def take_due(self, *, now: datetime, settle: datetime, limit: int) -> list[str]:
        """Cases whose next step has been due since ``settle`` and that nobody holds.

        Each is stamped ``relayed_at`` and not taken again for ``REQUEUE_AFTER``, so a wake-up waiting in a
        long queue is not published a second time every few seconds. A case that became due after it was
        last published (a retry's backoff ran out, a worker died after moving it on) is no such wake-up:
        it is taken at once, or every retry would wait ``REQUEUE_AFTER`` whatever its backoff.
        """
        query = (select(CaseRow.id).where(
            CaseRow.next_attempt_at.is_not(None), CaseRow.next_attempt_at <= settle,
            or_(CaseRow.lease_until.is_(None), CaseRow.lease_until <= now),
            or_(CaseRow.relayed_at.is_(None), CaseRow.relayed_at < CaseRow.next_attempt_at,
                CaseRow.relayed_at <= now - REQUEUE_AFTER))
            .order_by(CaseRow.next_attempt_at).limit(limit))
        ids = list(self.session.scalars(_skip_locked(self.session, query)))
        if ids:
            self.session.execute(update(CaseRow).where(CaseRow.id.in_(ids)).values(relayed_at=now))
        return ids

    def search(self, *, state: str | None = None, vendor: str | None = None, since: datetime | None = None,
             limit: int = 200) -> list[DunningCase]:
        query = select(CaseRow).order_by(CaseRow.opened_at.desc()).limit(limit)
        conditions = [c for c in (
            CaseRow.state == state if state else None,
            CaseRow.vendor == vendor if vendor else None,
            CaseRow.opened_at >= since if since else None) if c is not None]
        if conditions:
            query = query.where(and_(*conditions))
        return [_from_row(row) for row in self.session.scalars(query)]

    def count_by_state(self) -> dict[str, int]:
        rows = self.session.execute(select(CaseRow.state, func.count()).group_by(CaseRow.state))
        return {state: count for state, count in rows}

    def timeline(self, case_id: str) -> list[CaseEvent]:
        rows = self.session.scalars(select(CaseEventRow).where(CaseEventRow.case_id == case_id)
                                    .order_by(CaseEventRow.id))
        return [CaseEvent(row.at, row.kind, json.loads(row.detail),
                          CaseState(row.state_before) if row.state_before else None,
                          CaseState(row.state) if row.state else None, row.recovered_minor_added)
                for row in rows]


class EmailRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def claim(self, *, case_id: str, step: str, message_id: str, recipient: str, now: datetime) -> EmailRow:
        """The ledger row of this (case, step), created on first use; the database keeps it unique."""
        row = self.get(case_id, step)
        if row is not None:
            return row
        row = EmailRow(case_id=case_id, step=step, message_id=message_id, recipient=recipient, status="sending",
                       attempts=0, created_at=now)
        try:
            with self.session.begin_nested():
                self.session.add(row)
                self.session.flush()
        except IntegrityError:
            found = self.get(case_id, step)
            assert found is not None
            return found
        return row

    def record_attempt(self, *, case_id: str, step: str, message_id: str, recipient: str, now: datetime) -> None:
        """Claim the ledger row of this (case, step), or count one more attempt on it: one upsert.

        A row that exists keeps its Message-ID, so a retried send is the same message.
        """
        self.session.connection().execute(_RECORD_ATTEMPT[self.session.get_bind().dialect.name], {
            "v_case_id": case_id, "v_step": step, "v_message_id": message_id, "v_recipient": recipient,
            "v_created_at": now})

    def mark_sent(self, case_id: str, step: str, *, now: datetime) -> None:
        self.session.connection().execute(_MARK_SENT, {"w_case_id": case_id, "w_step": step, "v_sent_at": now})

    def get(self, case_id: str, step: str) -> EmailRow | None:
        return self.session.scalars(select(EmailRow).where(EmailRow.case_id == case_id, EmailRow.step == step)).first()

    def for_case(self, case_id: str) -> Sequence[EmailRow]:
        return self.session.scalars(select(EmailRow).where(EmailRow.case_id == case_id).order_by(EmailRow.id)).all()


def _plan_json(plan: InstallmentPlan | None) -> str | None:
    return json.dumps(plan.to_json(), sort_keys=True) if plan is not None else None


def _plan_from_json(text: str | None, currency: str | None) -> InstallmentPlan | None:
    if text is None or currency is None:
        return None
    raw = json.loads(text)
    items = tuple(Installment(int(i["number"]), Money(int(i["amount"]), currency), date.fromisoformat(i["due_date"]),
                              InstallmentStatus(i["status"])) for i in raw["installments"])
    return InstallmentPlan(currency, Frequency(raw["frequency"]) if raw["frequency"] else None, items)


def _case_parameters(case: DunningCase) -> dict[str, Any]:
    """The case's columns (all but its id, lease and relay stamp), as parameters of ``_CASE_VALUES``."""
    buyer = case.buyer
    values = {
        "vendor": case.vendor, "original_order_id": case.original_order_id,
        "failed_installment": case.failed_installment, "replacement_kind": case.replacement_kind.value,
        "state": case.state.value, "currency": case.currency, "outstanding_minor": case.outstanding_minor,
        "replacement_plan": _plan_json(case.replacement), "product_id": case.product_id,
        "product_name": case.product_name,
        "buyer_id": buyer.id if buyer else None, "buyer_email": buyer.email if buyer else None,
        "buyer_first_name": buyer.first_name if buyer else None,
        "buyer_last_name": buyer.last_name if buyer else None,
        "buyer_country_code": buyer.country_code if buyer else None,
        "replacement_order_id": case.replacement_order_id, "payment_url": case.payment_url,
        "link_sent_at": case.link_sent_at, "recovered_minor": case.recovered_minor, "reason": case.reason,
        "reason_code": case.reason_code,
        "reason_params": json.dumps(case.reason_params, sort_keys=True) if case.reason_params else None,
        "failed_step": case.failed_step.value if case.failed_step else None,
        "resume_state": case.resume_state.value if case.resume_state else None,
        "attempts": case.attempts, "next_attempt_at": case.next_attempt_at,
        "opened_at": case.opened_at, "updated_at": case.updated_at, "closed_at": case.closed_at,
        "reminder_days": json.dumps(list(case.reminder_days)), "expire_after_days": case.expire_after_days,
        "reminders_sent": case.reminders_sent, "final_notice_sent": case.final_notice_sent,
        "adjustments": json.dumps({str(n): s.value for n, s in sorted(case.adjustments.items())}),
        "replacement_by": case.replacement_by.value, "vendor_task_sent_at": case.vendor_task_sent_at,
        "vendor_reminders_sent": case.vendor_reminders_sent,
        "original_known_cancelled": case.original_known_cancelled, "cannot_generate": case.cannot_generate,
        "confirmed_paid": json.dumps(list(case.confirmed_paid)),
    }
    return {f"v_{name}": value for name, value in values.items()}


def _from_row(row: Any) -> DunningCase:
    """A case from a mapped row or a Core row of ``cases`` (both read by attribute)."""
    buyer = None
    if row.buyer_email is not None:
        buyer = Buyer(email=row.buyer_email, first_name=row.buyer_first_name or "",
                      last_name=row.buyer_last_name or "", country_code=row.buyer_country_code, id=row.buyer_id)
    return DunningCase(
        id=row.id, vendor=row.vendor, original_order_id=row.original_order_id,
        failed_installment=row.failed_installment, replacement_kind=ReplacementKind(row.replacement_kind),
        state=CaseState(row.state), opened_at=row.opened_at, updated_at=row.updated_at, currency=row.currency,
        outstanding_minor=row.outstanding_minor, replacement=_plan_from_json(row.replacement_plan, row.currency),
        product_id=row.product_id, product_name=row.product_name, buyer=buyer,
        replacement_order_id=row.replacement_order_id, payment_url=row.payment_url, link_sent_at=row.link_sent_at,
        recovered_minor=row.recovered_minor, reason=row.reason, reason_code=row.reason_code,
        reason_params=json.loads(row.reason_params) if row.reason_params else {},
        failed_step=Step(row.failed_step) if row.failed_step else None,
        resume_state=CaseState(row.resume_state) if row.resume_state else None, attempts=row.attempts,
        next_attempt_at=row.next_attempt_at, closed_at=row.closed_at,
        reminder_days=tuple(json.loads(row.reminder_days or "[]")), expire_after_days=row.expire_after_days,
        reminders_sent=row.reminders_sent or 0, final_notice_sent=bool(row.final_notice_sent),
        adjustments={int(n): InstallmentStatus(s) for n, s in json.loads(row.adjustments or "{}").items()},
        replacement_by=ReplacementBy(row.replacement_by or "api"), vendor_task_sent_at=row.vendor_task_sent_at,
        vendor_reminders_sent=row.vendor_reminders_sent or 0,
        original_known_cancelled=bool(row.original_known_cancelled), cannot_generate=bool(row.cannot_generate),
        confirmed_paid=tuple(json.loads(row.confirmed_paid or "[]")),
    )
