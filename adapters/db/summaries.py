"""The vendor summary ledger and the cases a summary reads."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.db.repositories import _from_row
from adapters.db.tables import CaseRow, VendorSummaryRow
from domain.case import DunningCase

_NOW_STATES = ("awaiting_payment", "needs_person")


class SummaryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def cases_for(self, vendor: str, *, since: datetime) -> list[DunningCase]:
        """Cases that did something since ``since``, and those waiting or with a person now."""
        query = select(CaseRow).where(CaseRow.vendor == vendor, or_(
            CaseRow.opened_at >= since, CaseRow.closed_at >= since, CaseRow.link_sent_at >= since,
            CaseRow.state.in_(_NOW_STATES)))
        return [_from_row(row) for row in self.session.scalars(query)]

    def claim(self, *, vendor: str, day: date, message_id: str, now: datetime) -> VendorSummaryRow | None:
        """The ledger row of (vendor, day) if this caller may send it: new, or claimed but never sent."""
        row = self.get(vendor, day)
        if row is None:
            row = VendorSummaryRow(vendor=vendor, day=day, message_id=message_id, status="sending", created_at=now)
            try:
                with self.session.begin_nested():
                    self.session.add(row)
                    self.session.flush()
            except IntegrityError:
                return None
            return row
        return row if row.status != "sent" else None

    def get(self, vendor: str, day: date) -> VendorSummaryRow | None:
        return self.session.scalars(select(VendorSummaryRow).where(
            VendorSummaryRow.vendor == vendor, VendorSummaryRow.day == day)).first()

    def sent_days(self, vendor: str) -> list[date]:
        return list(self.session.scalars(select(VendorSummaryRow.day).where(
            VendorSummaryRow.vendor == vendor, VendorSummaryRow.status == "sent").order_by(VendorSummaryRow.day)))
