"""case lifecycle and vendor summaries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import adapters.db.tables

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('inbox_events', schema=None) as batch_op:
        batch_op.create_index('ix_inbox_events_case_id', ['case_id'], unique=False)
    with op.batch_alter_table('emails', schema=None) as batch_op:
        batch_op.create_index('ix_emails_sent_at', ['sent_at'], unique=False)
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.create_index('ix_case_events_kind', ['kind'], unique=False)
    op.create_table('vendor_summaries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('vendor', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vendor_summaries')),
    sa.UniqueConstraint('vendor', 'day', name=op.f('uq_vendor_summaries_vendor_day'))
    )
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('relayed_at', adapters.db.tables.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reminder_days', sa.String(length=128), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('expire_after_days', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reminders_sent', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('final_notice_sent', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('adjustments', sa.Text(), server_default='{}', nullable=False))
        batch_op.create_index('ix_cases_vendor_closed', ['vendor', 'closed_at'], unique=False)
        batch_op.create_index('ix_cases_vendor_state', ['vendor', 'state'], unique=False)
        batch_op.create_index('ix_cases_vendor_link_sent', ['vendor', 'link_sent_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_index('ix_cases_vendor_link_sent')
        batch_op.drop_index('ix_cases_vendor_state')
        batch_op.drop_index('ix_cases_vendor_closed')
        batch_op.drop_column('adjustments')
        batch_op.drop_column('final_notice_sent')
        batch_op.drop_column('reminders_sent')
        batch_op.drop_column('expire_after_days')
        batch_op.drop_column('reminder_days')
        batch_op.drop_column('relayed_at')

    op.drop_table('vendor_summaries')
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.drop_index('ix_case_events_kind')
    with op.batch_alter_table('emails', schema=None) as batch_op:
        batch_op.drop_index('ix_emails_sent_at')
    with op.batch_alter_table('inbox_events', schema=None) as batch_op:
        batch_op.drop_index('ix_inbox_events_case_id')
