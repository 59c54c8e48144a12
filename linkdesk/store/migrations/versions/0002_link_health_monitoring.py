"""Link health monitoring: every webhook attempt with its verdict, the verified-event queue, the
worker's durable job queue and history, customer relink links, audit roles and reasons.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from linkdesk.store.models import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("state_as_of", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_webhook_at", UTCDateTime(), nullable=True))

    # Plain ADD COLUMN (no table rebuild), so the append-only triggers stay in place.
    op.add_column("audit_log", sa.Column("role", sa.String(20), nullable=True))
    op.add_column("audit_log", sa.Column("reason", sa.Text(), nullable=True))
    op.create_index("ix_audit_log_actor_at", "audit_log", ["actor", "at"])
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])
    op.create_index("ix_audit_log_customer_at", "audit_log", ["customer_id", "at"])

    # Every attempt is recorded now, so the delivery token can repeat (and can be missing).
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_constraint("uq_webhook_deliveries_delivery_token", type_="unique")
        batch.alter_column("delivery_token", existing_type=sa.String(200), nullable=True)
        batch.add_column(sa.Column("idempotency_key", sa.String(200), nullable=True))
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(40), nullable=True))
        batch.add_column(sa.Column("event_timestamp", UTCDateTime(), nullable=True))
        batch.create_index("ix_webhook_deliveries_delivery_token", ["delivery_token"])
        batch.create_index("ix_webhook_deliveries_link_received", ["link_id", "received_at"])

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("delivery_token", sa.String(200), nullable=True),
        sa.Column("event", sa.String(60), nullable=False),
        sa.Column("link_id", sa.String(200), nullable=False),
        sa.Column("webhook_timestamp", UTCDateTime(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("claimed_by", sa.String(100), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("applied_at", UTCDateTime(), nullable=True),
        sa.Column("detail", sa.String(300), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_events"),
        sa.UniqueConstraint("idempotency_key", name="uq_webhook_events_idempotency_key"),
        sa.UniqueConstraint("delivery_token", name="uq_webhook_events_delivery_token"),
    )
    op.create_index(
        "ix_webhook_events_status_ts", "webhook_events", ["status", "webhook_timestamp", "id"]
    )
    op.create_index("ix_webhook_events_link", "webhook_events", ["link_id", "webhook_timestamp"])

    op.create_table(
        "sync_jobs",
        sa.Column("id", sa.String(220), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("link_id", sa.String(200), nullable=True),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(100), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_run_at", UTCDateTime(), nullable=True),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sync_jobs"),
    )
    op.create_index("ix_sync_jobs_due", "sync_jobs", ["due_at", "priority"])
    op.create_index("ix_sync_jobs_link", "sync_jobs", ["link_id"])

    op.create_table(
        "sync_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("link_id", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_attempts"),
    )
    op.create_index("ix_sync_attempts_at", "sync_attempts", ["at"])
    op.create_index("ix_sync_attempts_link_at", "sync_attempts", ["link_id", "at"])

    op.create_table(
        "worker_state",
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_worker_state"),
    )

    op.create_table(
        "customer_link_tokens",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("link_id", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.String(150), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("used_at", UTCDateTime(), nullable=True),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_customer_link_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_customer_link_tokens_token_sha256"),
    )
    op.create_index(
        "ix_customer_link_tokens_link", "customer_link_tokens", ["link_id", "created_at"]
    )


def downgrade() -> None:
    for table in ("customer_link_tokens", "worker_state", "sync_attempts", "sync_jobs"):
        op.drop_table(table)
    op.drop_table("webhook_events")
    # Attempts beyond the first of each delivery would break the restored unique constraint.
    op.execute(
        "DELETE FROM webhook_deliveries WHERE delivery_token IS NULL OR id NOT IN "
        "(SELECT MIN(id) FROM webhook_deliveries GROUP BY delivery_token)"
    )
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_index("ix_webhook_deliveries_link_received")
        batch.drop_index("ix_webhook_deliveries_delivery_token")
        batch.drop_column("event_timestamp")
        batch.drop_column("reason")
        batch.drop_column("attempt")
        batch.drop_column("idempotency_key")
        batch.alter_column("delivery_token", existing_type=sa.String(200), nullable=False)
        batch.create_unique_constraint("uq_webhook_deliveries_delivery_token", ["delivery_token"])
    op.drop_index("ix_audit_log_customer_at", table_name="audit_log")
    op.drop_index("ix_audit_log_action_at", table_name="audit_log")
    op.drop_index("ix_audit_log_actor_at", table_name="audit_log")
    # SQLite can drop a column in place (3.35+), which keeps the append-only triggers.
    op.drop_column("audit_log", "reason")
    op.drop_column("audit_log", "role")
    with op.batch_alter_table("links") as batch:
        batch.drop_column("last_webhook_at")
        batch.drop_column("state_as_of")
