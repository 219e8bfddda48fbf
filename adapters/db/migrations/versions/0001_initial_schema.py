"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import adapters.db.tables

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('cases',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('vendor', sa.String(length=64), nullable=False),
    sa.Column('original_order_id', sa.String(length=128), nullable=False),
    sa.Column('failed_installment', sa.Integer(), nullable=False),
    sa.Column('replacement_kind', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('outstanding_minor', sa.BigInteger(), nullable=True),
    sa.Column('replacement_plan', sa.Text(), nullable=True),
    sa.Column('product_id', sa.String(length=128), nullable=True),
    sa.Column('product_name', sa.String(length=512), nullable=True),
    sa.Column('buyer_id', sa.String(length=128), nullable=True),
    sa.Column('buyer_email', sa.String(length=320), nullable=True),
    sa.Column('buyer_first_name', sa.String(length=256), nullable=True),
    sa.Column('buyer_last_name', sa.String(length=256), nullable=True),
    sa.Column('buyer_country_code', sa.String(length=2), nullable=True),
    sa.Column('replacement_order_id', sa.String(length=128), nullable=True),
    sa.Column('payment_url', sa.Text(), nullable=True),
    sa.Column('link_sent_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('recovered_minor', sa.BigInteger(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('failed_step', sa.String(length=32), nullable=True),
    sa.Column('resume_state', sa.String(length=32), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lease_until', adapters.db.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('opened_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases'))
    )
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.create_index('ix_cases_due', ['next_attempt_at'], unique=False, sqlite_where=sa.text('next_attempt_at IS NOT NULL'), postgresql_where=sa.text('next_attempt_at IS NOT NULL'))
        batch_op.create_index('ix_cases_replacement', ['vendor', 'replacement_order_id'], unique=False)
        batch_op.create_index('ix_cases_vendor_opened', ['vendor', 'opened_at'], unique=False)
        batch_op.create_index('uq_cases_open_order', ['vendor', 'original_order_id'], unique=True, sqlite_where=sa.text("state NOT IN ('recovered', 'resolved', 'lost')"), postgresql_where=sa.text("state NOT IN ('recovered', 'resolved', 'lost')"))

    op.create_table('inbox_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('vendor', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('dedup_key', sa.String(length=128), nullable=False),
    sa.Column('order_id', sa.String(length=128), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('received_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('processed_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=64), nullable=True),
    sa.Column('case_id', sa.String(length=32), nullable=True),
    sa.Column('enqueued_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbox_events')),
    sa.UniqueConstraint('vendor', 'event_type', 'dedup_key', name=op.f('uq_inbox_events_vendor_event_type_dedup_key'))
    )
    with op.batch_alter_table('inbox_events', schema=None) as batch_op:
        batch_op.create_index('ix_inbox_events_pending', ['received_at'], unique=False, sqlite_where=sa.text('processed_at IS NULL'), postgresql_where=sa.text('processed_at IS NULL'))

    op.create_table('case_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('at', adapters.db.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_case_events_case_id_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_events'))
    )
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.create_index('ix_case_events_case', ['case_id', 'id'], unique=False)

    op.create_table('emails',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.String(length=32), nullable=False),
    sa.Column('step', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('recipient', sa.String(length=320), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_emails_case_id_cases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_emails')),
    sa.UniqueConstraint('case_id', 'step', name=op.f('uq_emails_case_id_step'))
    )


def downgrade() -> None:
    op.drop_table('emails')
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.drop_index('ix_case_events_case')

    op.drop_table('case_events')
    with op.batch_alter_table('inbox_events', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_events_pending', sqlite_where=sa.text('processed_at IS NULL'), postgresql_where=sa.text('processed_at IS NULL'))

    op.drop_table('inbox_events')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('uq_cases_open_order', sqlite_where=sa.text("state NOT IN ('recovered', 'resolved', 'lost')"), postgresql_where=sa.text("state NOT IN ('recovered', 'resolved', 'lost')"))
        batch_op.drop_index('ix_cases_vendor_opened')
        batch_op.drop_index('ix_cases_replacement')
        batch_op.drop_index('ix_cases_due', sqlite_where=sa.text('next_attempt_at IS NOT NULL'), postgresql_where=sa.text('next_attempt_at IS NOT NULL'))

    op.drop_table('cases')
