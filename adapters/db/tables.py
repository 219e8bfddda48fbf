"""The schema, as typed SQLAlchemy mappings. The database enforces what must never happen twice:
one stored event per deduplication key, one open case per original order, one email per (case, step)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CLOSED_STATES = ("recovered", "resolved", "lost")
_OPEN_CASE = text("state NOT IN ('recovered', 'resolved', 'lost')")
_WORKING = text("next_attempt_at IS NOT NULL")
_PENDING = text("processed_at IS NULL")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no zone) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


class InboxEvent(Base):
    """A platform webhook, stored before it is answered; ``processed_at`` empty means work to do.

    An event that could not be applied counts its ``attempts`` and keeps the last ``error``; once it failed for
    good it is processed with the outcome ``failed``, so it is never re-sent again.
    """

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("vendor", "event_type", "dedup_key"),
        Index("ix_inbox_events_pending", "received_at", sqlite_where=_PENDING, postgresql_where=_PENDING),
        Index("ix_inbox_events_case_id", "case_id"),
        Index("ix_inbox_events_vendor_order", "vendor", "order_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    vendor: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    dedup_key: Mapped[str] = mapped_column(String(128))
    order_id: Mapped[str | None] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(64))
    case_id: Mapped[str | None] = mapped_column(String(32))
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)


class CaseRow(Base):
    __tablename__ = "cases"
    __table_args__ = (
        Index("uq_cases_open_order", "vendor", "original_order_id", unique=True,
              sqlite_where=_OPEN_CASE, postgresql_where=_OPEN_CASE),
        Index("ix_cases_due", "next_attempt_at", sqlite_where=_WORKING, postgresql_where=_WORKING),
        Index("ix_cases_replacement", "vendor", "replacement_order_id"),
        Index("ix_cases_vendor_opened", "vendor", "opened_at"),
        Index("ix_cases_vendor_closed", "vendor", "closed_at"),
        Index("ix_cases_vendor_state", "vendor", "state"),
        Index("ix_cases_vendor_link_sent", "vendor", "link_sent_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    vendor: Mapped[str] = mapped_column(String(64))
    original_order_id: Mapped[str] = mapped_column(String(128))
    failed_installment: Mapped[int] = mapped_column(Integer)
    replacement_kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str | None] = mapped_column(String(3))
    outstanding_minor: Mapped[int | None] = mapped_column(BigInteger)
    replacement_plan: Mapped[str | None] = mapped_column(Text)
    product_id: Mapped[str | None] = mapped_column(String(128))
    product_name: Mapped[str | None] = mapped_column(String(512))
    buyer_id: Mapped[str | None] = mapped_column(String(128))
    buyer_email: Mapped[str | None] = mapped_column(String(320))
    buyer_first_name: Mapped[str | None] = mapped_column(String(256))
    buyer_last_name: Mapped[str | None] = mapped_column(String(256))
    buyer_country_code: Mapped[str | None] = mapped_column(String(2))
    replacement_order_id: Mapped[str | None] = mapped_column(String(128))
    payment_url: Mapped[str | None] = mapped_column(Text)
    link_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recovered_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    # The reason as a stable code and its parameters (JSON), which emails word in the reader's language.
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason_params: Mapped[str | None] = mapped_column(Text)
    failed_step: Mapped[str | None] = mapped_column(String(32))
    resume_state: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    relayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reminder_days: Mapped[str] = mapped_column(String(128), default="[]", server_default="[]")
    expire_after_days: Mapped[int | None] = mapped_column(Integer)
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    final_notice_sent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    adjustments: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    # A replacement the vendor makes by hand in CopeCart (domain.case.DunningCase says what each means).
    replacement_by: Mapped[str] = mapped_column(String(16), default="api", server_default="api")
    vendor_task_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    vendor_reminders_sent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    original_known_cancelled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    cannot_generate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    confirmed_paid: Mapped[str] = mapped_column(String(512), default="[]", server_default="[]")


class CaseEventRow(Base):
    """The case's timeline: what was decided, tried, failed and done, in order.

    Rows are only ever added. Each says what it changed: the case's state before and after it, and what it
    added to the amount recovered (written since revision 0003; ``state`` is empty on older rows).
    """

    __tablename__ = "case_events"
    __table_args__ = (Index("ix_case_events_case", "case_id", "id"), Index("ix_case_events_kind", "kind"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    state_before: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str | None] = mapped_column(String(32))
    recovered_minor_added: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class EmailRow(Base):
    """One email per (case, step): claimed before it is sent, marked once the server took it."""

    __tablename__ = "emails"
    __table_args__ = (UniqueConstraint("case_id", "step"), Index("ix_emails_sent_at", "sent_at"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(255))
    recipient: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)


class VendorSummaryRow(Base):
    """One summary email per vendor and local day: claimed before sending, so it is never sent twice.

    A claim holds the row until ``lease_until``, as a case's lease does; a send that failed waits until
    ``next_attempt_at``, longer after each of its ``attempts``.
    """

    __tablename__ = "vendor_summaries"
    __table_args__ = (UniqueConstraint("vendor", "day"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    vendor: Mapped[str] = mapped_column(String(64))
    day: Mapped[date] = mapped_column(Date)
    message_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
