"""case events say what they changed

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns and a constant default: no table rewrite on PostgreSQL, a plain ADD COLUMN on SQLite.
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state_before', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('state', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('recovered_minor_added', sa.BigInteger(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('case_events', schema=None) as batch_op:
        batch_op.drop_column('recovered_minor_added')
        batch_op.drop_column('state')
        batch_op.drop_column('state_before')
