"""cases whose vendor makes the replacement by hand in CopeCart

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every case before this revision was made through the order API: the defaults say so.
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replacement_by', sa.String(length=16), nullable=False, server_default='api'))
        batch_op.add_column(sa.Column('vendor_task_sent_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('vendor_reminders_sent', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('original_known_cancelled', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('cannot_generate', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('confirmed_paid', sa.String(length=512), nullable=False, server_default='[]'))
    # (The buyer's payment of a vendor-made order is matched by buyer email among the vendor's cases awaiting
    # payment: ix_cases_vendor_state finds those.)
    # Its plan is rebuilt from the IPNs stored for the order.
    op.create_index('ix_inbox_events_vendor_order', 'inbox_events', ['vendor', 'order_id'])


def downgrade() -> None:
    op.drop_index('ix_inbox_events_vendor_order', table_name='inbox_events')
    with op.batch_alter_table('cases', schema=None) as batch_op:
        for column in ('confirmed_paid', 'cannot_generate', 'original_known_cancelled', 'vendor_reminders_sent',
                       'vendor_task_sent_at', 'replacement_by'):
            batch_op.drop_column(column)
