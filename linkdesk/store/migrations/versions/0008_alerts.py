"""Alerts: rules, incidents with their history, silences, the notification outbox, and the
per-bank rollup the error-spike rule reads instead of the links table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from linkdesk.store.models import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(60), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("renotify_minutes", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.String(60), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("open_key", sa.String(270), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_notified_at", UTCDateTime(), nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(200), nullable=True),
        sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.UniqueConstraint("open_key", name="uq_alerts_open_key"),
    )
    op.create_index("ix_alerts_status_started", "alerts", ["status", "started_at"])
    op.create_index("ix_alerts_started", "alerts", ["started_at"])
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(30), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name="fk_alert_events_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
    )
    op.create_index("ix_alert_events_alert_at", "alert_events", ["alert_id", "at"])
    op.create_index("ix_alert_events_at", "alert_events", ["at"])
    op.create_table(
        "alert_silences",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.String(60), nullable=False),
        sa.Column("key", sa.String(200), nullable=True),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_silences"),
    )
    op.create_index("ix_alert_silences_rule_until", "alert_silences", ["rule_id", "until"])
    op.create_table(
        "alert_notifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(300), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name="fk_alert_notifications_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_notifications"),
    )
    op.create_index(
        "ix_alert_notifications_status_next", "alert_notifications", ["status", "next_attempt_at"]
    )
    op.create_index("ix_alert_notifications_alert", "alert_notifications", ["alert_id"])
    op.create_table(
        "alert_bank_buckets",
        sa.Column("institution_id", sa.String(200), nullable=False),
        sa.Column("bucket_start", UTCDateTime(), nullable=False),
        sa.Column("broke", sa.Integer(), nullable=False),
        sa.Column("recovered", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("institution_id", "bucket_start", name="pk_alert_bank_buckets"),
    )
    op.create_index("ix_alert_bank_buckets_start", "alert_bank_buckets", ["bucket_start"])
    op.create_table(
        "alert_state",
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_alert_state"),
    )


def downgrade() -> None:
    op.drop_table("alert_state")
    op.drop_index("ix_alert_bank_buckets_start", table_name="alert_bank_buckets")
    op.drop_table("alert_bank_buckets")
    op.drop_index("ix_alert_notifications_alert", table_name="alert_notifications")
    op.drop_index("ix_alert_notifications_status_next", table_name="alert_notifications")
    op.drop_table("alert_notifications")
    op.drop_index("ix_alert_silences_rule_until", table_name="alert_silences")
    op.drop_table("alert_silences")
    op.drop_index("ix_alert_events_at", table_name="alert_events")
    op.drop_index("ix_alert_events_alert_at", table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_index("ix_alerts_started", table_name="alerts")
    op.drop_index("ix_alerts_status_started", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("alert_rules")
