"""Rollups kept by their writers: links per state, error code and bank (the shared totals);
Connect sessions per day, mode, bank, outcome and exit error, and the screens reached, dropped
and timed per day, mode and bank (the funnel).

The totals counted the links by state, error code and bank from an index (0.15 s at a million
links), every 10 s: another process's writes showed that much later. The links' writers now keep
``link_counts`` in step, in the transaction of each change; the totals read a few thousand rows.

The funnel counted a window's sessions on each view; counted by bank, it joined every session of
the window to its link and to its last select_institution event (1.5 s at a million links on
SQLite), and its screens read every logged entry of the window's sessions. A session now carries
its bank (``connect_sessions.institution_id``, set by its writers as soon as it is known) and its
writers keep ``connect_session_days`` and ``connect_screen_days`` in step, so the funnel reads a
few rows per day.

This migration fills them from what is stored: the bank of a session with a link is the link's,
else the last one picked in Connect; the rollups are then counted from the sessions and their
entries (all in shard 0: a count is the sum of its shards, whichever they are).

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


_SCREENS = """
INSERT INTO connect_screen_days
    (day, mode, institution_id, screen, shard, reached, dropped, milliseconds, samples)
WITH logged AS (
    SELECT session_id, seq, name, at, {screen} AS screen,
           lead(at) OVER (PARTITION BY session_id ORDER BY seq) AS next_at
    FROM connect_events
), shown AS (
    SELECT session_id, seq, screen, at, next_at,
           max(seq) OVER (PARTITION BY session_id) AS last_seq
    FROM logged
    WHERE name = 'change_screen' AND screen IS NOT NULL
), per_session AS (
    SELECT date(s.started_at) AS day, s.mode, coalesce(s.institution_id, '') AS bank,
           shown.screen,
           max(CASE WHEN shown.seq = shown.last_seq AND s.outcome <> 'success'
                    THEN 1 ELSE 0 END) AS dropped,
           sum(CASE WHEN shown.next_at IS NOT NULL AND shown.at IS NOT NULL
                    THEN {milliseconds} ELSE 0 END) AS milliseconds,
           sum(CASE WHEN shown.next_at IS NOT NULL AND shown.at IS NOT NULL
                    THEN 1 ELSE 0 END) AS samples
    FROM shown JOIN connect_sessions s ON s.id = shown.session_id
    GROUP BY s.id, date(s.started_at), s.mode, coalesce(s.institution_id, ''), shown.screen
)
SELECT day, mode, bank, screen, 0, count(*), sum(dropped), sum(milliseconds), sum(samples)
FROM per_session
GROUP BY day, mode, bank, screen
"""
_SQLITE = {
    "picked": "json_extract(payload, '$.properties.institution_id')",
    "screen": "substr(json_extract(payload, '$.properties.current_screen_name'), 1, 100)",
    # Whole milliseconds, rounded down, from the stored text's whole seconds and microseconds
    # apart (exact: SQLite's own date functions keep milliseconds, rounded).
    "milliseconds": "CASE WHEN {us_next} - {us_at} >= 0 THEN ({us_next} - {us_at}) / 1000 "
    "ELSE -((999 - ({us_next} - {us_at})) / 1000) END".format(
        us_next="(CAST(strftime('%s', substr(shown.next_at, 1, 19)) AS INTEGER) * 1000000 "
        "+ CAST(substr(shown.next_at, 21, 6) AS INTEGER))",
        us_at="(CAST(strftime('%s', substr(shown.at, 1, 19)) AS INTEGER) * 1000000 "
        "+ CAST(substr(shown.at, 21, 6) AS INTEGER))",
    ),
}
_POSTGRESQL = {
    "picked": "payload::jsonb #>> '{properties,institution_id}'",
    "screen": "left(payload::jsonb #>> '{properties,current_screen_name}', 100)",
    "milliseconds": "floor(extract(epoch FROM shown.next_at - shown.at) * 1000)::bigint",
}


def upgrade() -> None:
    sql = _POSTGRESQL if op.get_bind().dialect.name == "postgresql" else _SQLITE
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
    op.execute(
        f"""
        UPDATE connect_sessions SET institution_id = (
            SELECT {sql["picked"]} FROM connect_events
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
        sa.Column("end_logged", sa.Boolean(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("sessions", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "mode",
            "institution_id",
            "outcome",
            "exit_error_id",
            "end_logged",
            "shard",
            name="pk_connect_session_days",
        ),
    )
    op.execute(
        """
        INSERT INTO connect_session_days
            (day, mode, institution_id, outcome, exit_error_id, end_logged, shard, sessions)
        SELECT day, mode, bank, outcome, error, end_logged, 0, count(*)
        FROM (
            SELECT date(started_at) AS day, mode, coalesce(institution_id, '') AS bank,
                   outcome, coalesce(exit_error_id, '') AS error,
                   CASE WHEN EXISTS (
                       SELECT 1 FROM connect_events
                       WHERE connect_events.session_id = connect_sessions.id
                         AND connect_events.type IN ('success', 'relink_success', 'exit')
                   ) THEN TRUE ELSE FALSE END AS end_logged
            FROM connect_sessions
        ) AS sessions
        GROUP BY day, mode, bank, outcome, error, end_logged
        """
    )
    op.create_table(
        "connect_screen_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("institution_id", sa.String(200), nullable=False),
        sa.Column("screen", sa.String(100), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("reached", sa.Integer(), nullable=False),
        sa.Column("dropped", sa.Integer(), nullable=False),
        sa.Column("milliseconds", sa.BigInteger(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "mode", "institution_id", "screen", "shard", name="pk_connect_screen_days"
        ),
    )
    op.execute(_SCREENS.format(screen=sql["screen"], milliseconds=sql["milliseconds"]))
    op.create_table(
        "link_counts",
        sa.Column("state", sa.String(40), nullable=False),
        sa.Column("error_code", sa.String(60), nullable=False),
        sa.Column("institution_id", sa.String(200), nullable=False),
        sa.Column("shard", sa.SmallInteger(), nullable=False),
        sa.Column("links", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "state", "error_code", "institution_id", "shard", name="pk_link_counts"
        ),
    )
    op.execute(
        """
        INSERT INTO link_counts (state, error_code, institution_id, shard, links)
        SELECT state, coalesce(error_code, ''), institution_id, 0, count(*)
        FROM links
        GROUP BY state, coalesce(error_code, ''), institution_id
        """
    )


def downgrade() -> None:
    op.drop_table("link_counts")
    op.drop_table("connect_screen_days")
    op.drop_table("connect_session_days")
    op.drop_index("ix_connect_sessions_started", table_name="connect_sessions")
    op.create_index(
        "ix_connect_sessions_started", "connect_sessions", ["started_at", "mode", "outcome"]
    )
    with op.batch_alter_table("connect_sessions") as batch:
        batch.drop_column("institution_id")
