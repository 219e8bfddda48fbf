"""cases keep their reason as a code with parameters

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns: no table rewrite. Cases handed over before this revision have no code; emails say
    # only that they need a person, and their free-text reason stays for operators.
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reason_code', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reason_params', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cases', schema=None) as batch_op:
        batch_op.drop_column('reason_params')
        batch_op.drop_column('reason_code')
