"""The Connect funnel's rollup: sessions per day, mode, bank, outcome and exit error.

The funnel counted a window's sessions on each view; counted by bank, it joined every session of
the window to its link and to its last select_institution event (1.5 s at a million links on
SQLite). A session now carries its bank (``connect_sessions.institution_id``, set by its writers
as soon as it is known) and its writers keep ``connect_session_days`` in step, so the funnel's
counts read a few rows per day.

This migration fills both from what is stored: the bank of a session with a link is the link's,
else the last one picked in Connect; the rollup is then a count of the sessions by bucket (all in
shard 0: a count is the sum of its shards, whichever they are).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connect_sessions") as batch:
        batch.add_column(sa.Column("institution_id", sa.String(200), nullable=True))
    op.execute(
        """
        UPDATE connect_sessions SET institution_id = (
            SELECT links.institution_id FROM links WHERE links.link_id = connect_sessions.link_id
        )
        WHERE link_id IS NOT NULL
        """
    )
    picked = "json_extract(payload, '$.properties.institution_id')"
    if op.get_bind().dialect.name == "postgresql":
        picked = "payload::jsonb #>> '{properties,institution_id}'"
    op.execute(
        f"""
        UPDATE connect_sessions SET institution_id = (
            SELECT {picked} FROM connect_events
            WHERE connect_events.session_id = connect_sessions.id
              AND connect_events.name = 'select_institution'
            ORDER BY connect_events.seq DESC LIMIT 1
        )
        WHERE institution_id IS NULL
        """
    )
    op.drop_index("ix_connect_sessions_started", table_name="connect_sessions")
    op.create_index(
        "ix_connect_sessions_started",
        "connect_sessions",
        ["started_at", "mode", "outcome", "institution_id"],
    )
    op.create_table(
        "connect_session_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("institution_id", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("exit_error_id", sa.String(100), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "mode",
            "institution_id",
            "outcome",
            "exit_error_id",
            "shard",
            name="pk_connect_session_days",
        ),
    )
    op.execute(
        """
        INSERT INTO connect_session_days
            (day, mode, institution_id, outcome, exit_error_id, shard, sessions)
        SELECT date(started_at), mode, coalesce(institution_id, ''), outcome,
               coalesce(exit_error_id, ''), 0, count(*)
        FROM connect_sessions
        GROUP BY date(started_at), mode, coalesce(institution_id, ''), outcome,
                 coalesce(exit_error_id, '')
        """
    )


def downgrade() -> None:
    op.drop_table("connect_session_days")
    op.drop_index("ix_connect_sessions_started", table_name="connect_sessions")
    op.create_index(
        "ix_connect_sessions_started", "connect_sessions", ["started_at", "mode", "outcome"]
    )
    with op.batch_alter_table("connect_sessions") as batch:
        batch.drop_column("institution_id")
