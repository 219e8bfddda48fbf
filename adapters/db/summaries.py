"""The vendor summary ledger and the cases a summary reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.db.repositories import _from_row
from adapters.db.tables import CaseRow, VendorSummaryRow
from domain.case import DunningCase

_NOW_STATES = ("awaiting_payment", "needs_person")
SENT = "sent"


@dataclass(frozen=True, slots=True)
class SummaryRecord:
    """The ledger of one vendor's summary of one day, as the use cases read it."""

    vendor: str
    day: date
    status: str
    attempts: int
    lease_until: datetime | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    error: str | None

    @classmethod
    def of(cls, row: VendorSummaryRow) -> SummaryRecord:
        return cls(row.vendor, row.day, row.status, row.attempts or 0, row.lease_until, row.next_attempt_at,
                   row.sent_at, row.error)


class SummaryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def cases_for(self, vendor: str, *, since: datetime) -> list[DunningCase]:
        """Cases that did something since ``since``, and those waiting or with a person now."""
        query = select(CaseRow).where(CaseRow.vendor == vendor, or_(
            CaseRow.opened_at >= since, CaseRow.closed_at >= since, CaseRow.link_sent_at >= since,
            CaseRow.state.in_(_NOW_STATES)))
        return [_from_row(row) for row in self.session.scalars(query)]

    def claim(self, *, vendor: str, day: date, message_id: str, now: datetime,
              until: datetime) -> SummaryRecord | None:
        """Hold the ledger row of (vendor, day) until ``until``, to send the summary: a new row, or one not sent
        yet whose wait after a failed send is over and that no live claim holds (a worker that died mid-send
        lets go when its claim ends). None: sent, held by another worker, or waiting to be tried again."""
        row = self._row(vendor, day)
        if row is None:
            row = VendorSummaryRow(vendor=vendor, day=day, message_id=message_id, status="sending", created_at=now,
                                   attempts=0, lease_until=until)
            try:
                with self.session.begin_nested():
                    self.session.add(row)
                    self.session.flush()
            except IntegrityError:
                return None
            return SummaryRecord.of(row)
        # One UPDATE decides between claimers: the second waits for the first's row lock, then finds it held.
        taken = self.session.execute(update(VendorSummaryRow).where(
            VendorSummaryRow.id == row.id, VendorSummaryRow.status != SENT,
            or_(VendorSummaryRow.lease_until.is_(None), VendorSummaryRow.lease_until <= now),
            or_(VendorSummaryRow.next_attempt_at.is_(None), VendorSummaryRow.next_attempt_at <= now))
            .values(lease_until=until, status="sending"))
        return SummaryRecord.of(row) if cast(CursorResult[Any], taken).rowcount else None

    def mark_sent(self, vendor: str, day: date, *, now: datetime) -> None:
        """The mail server took the summary; the first time it did stays."""
        self.session.execute(update(VendorSummaryRow).where(
            VendorSummaryRow.vendor == vendor, VendorSummaryRow.day == day).values(
            status=SENT, sent_at=func.coalesce(VendorSummaryRow.sent_at, now), lease_until=None, error=None))

    def retry_later(self, vendor: str, day: date, *, held_until: datetime, at: datetime, error: str,
                    permanent: bool) -> bool:
        """A send failed: count it, keep the error and let go of the claim until ``at``. Only while the claim
        ``held_until`` is still the row's: a claim that ran out may have passed to another worker, mid-send."""
        result = self.session.execute(update(VendorSummaryRow).where(
            VendorSummaryRow.vendor == vendor, VendorSummaryRow.day == day,
            VendorSummaryRow.lease_until == held_until).values(
            attempts=VendorSummaryRow.attempts + 1, status="failed" if permanent else "retrying", error=error,
            lease_until=None, next_attempt_at=at))
        return bool(cast(CursorResult[Any], result).rowcount)

    def get(self, vendor: str, day: date) -> SummaryRecord | None:
        row = self._row(vendor, day)
        return SummaryRecord.of(row) if row is not None else None

    def _row(self, vendor: str, day: date) -> VendorSummaryRow | None:
        return self.session.scalars(select(VendorSummaryRow).where(
            VendorSummaryRow.vendor == vendor, VendorSummaryRow.day == day)).first()

    def sent_days(self, vendor: str) -> list[date]:
        return list(self.session.scalars(select(VendorSummaryRow.day).where(
            VendorSummaryRow.vendor == vendor, VendorSummaryRow.status == "sent").order_by(VendorSummaryRow.day)))
