"""The Overview trend's rollup: per day, how the links needing a relink moved.

The trend of the last 90 days was replayed from the whole state-change history on each view (a
window function over every change, seconds at a million links); the rollup that already folds
each change into the error-spike buckets now also adds it to its day, so the trend reads a few
rows (``state_change_days``). Filled for the past by the rollup itself on its next run.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "state_change_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("auth_expired", sa.Integer(), nullable=False),
        sa.Column("needs_relink", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_state_change_days"),
    )


def downgrade() -> None:
    op.drop_table("state_change_days")
