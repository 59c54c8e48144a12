"""Initial schema: customers, institutions, links, accounts, Connect sessions and events, state
changes, audit log, webhook deliveries, relink leases.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from linkdesk.store.models import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(150), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customers"),
    )
    op.create_table(
        "institutions",
        sa.Column("institution_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("domain", sa.String(300), nullable=True),
        sa.Column("country", sa.String(8), nullable=True),
        sa.Column("color", sa.String(7), nullable=True),
        sa.Column("color_dark", sa.String(7), nullable=True),
        sa.Column("logo", sa.Text(), nullable=True),
        sa.Column("logo_dark", sa.Text(), nullable=True),
        sa.Column("avatar", sa.Text(), nullable=True),
        sa.Column("avatar_dark", sa.Text(), nullable=True),
        sa.Column("image_sources", sa.JSON(), nullable=False),
        sa.Column("fetched_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("institution_id", name="pk_institutions"),
    )
    op.create_index("ix_institutions_name", "institutions", ["name"])

    op.create_table(
        "links",
        sa.Column("link_id", sa.String(200), nullable=False),
        sa.Column("customer_id", sa.String(150), nullable=True),
        sa.Column("institution_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(40), nullable=False),
        sa.Column("error_code", sa.String(60), nullable=True),
        sa.Column("provider", sa.String(40), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=True),
        sa.Column("last_synced_at", UTCDateTime(), nullable=True),
        sa.Column("products_refreshed_at", UTCDateTime(), nullable=True),
        sa.Column("discovered_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.customer_id"],
            name="fk_links_customer_id_customers",
        ),
        sa.ForeignKeyConstraint(
            ["institution_id"],
            ["institutions.institution_id"],
            name="fk_links_institution_id_institutions",
        ),
        sa.PrimaryKeyConstraint("link_id", name="pk_links"),
    )
    op.create_index("ix_links_updated", "links", ["updated_at", "link_id"])
    op.create_index("ix_links_state_updated", "links", ["state", "updated_at", "link_id"])
    op.create_index("ix_links_error_updated", "links", ["error_code", "updated_at", "link_id"])
    op.create_index(
        "ix_links_institution_updated", "links", ["institution_id", "updated_at", "link_id"]
    )
    op.create_index("ix_links_customer", "links", ["customer_id", "link_id"])

    op.create_table(
        "accounts",
        sa.Column("link_id", sa.String(200), nullable=False),
        sa.Column("account_id", sa.String(200), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("account_type", sa.String(80), nullable=True),
        sa.Column("mask", sa.String(16), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("balance_current", sa.Float(), nullable=True),
        sa.Column("balance_available", sa.Float(), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"], ["links.link_id"], name="fk_accounts_link_id_links", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("link_id", "account_id", name="pk_accounts"),
    )

    op.create_table(
        "connect_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(10), nullable=False),
        sa.Column("customer_id", sa.String(150), nullable=True),
        sa.Column("link_id", sa.String(200), nullable=True),
        sa.Column("started_by", sa.String(200), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("exit_error_id", sa.String(100), nullable=True),
        sa.Column("exit_message", sa.Text(), nullable=True),
        sa.Column("exit_request_id", sa.String(200), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("completion_claimed_at", UTCDateTime(), nullable=True),
        sa.Column("exchanged_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_connect_sessions"),
    )
    op.create_index("ix_connect_sessions_started", "connect_sessions", ["started_at"])
    op.create_index("ix_connect_sessions_link", "connect_sessions", ["link_id", "started_at"])
    op.create_index(
        "ix_connect_sessions_actor_outcome",
        "connect_sessions",
        ["started_by", "outcome", "started_at"],
    )

    op.create_table(
        "connect_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("name", sa.String(100), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=True),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["connect_sessions.id"],
            name="fk_connect_events_session_id_connect_sessions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_connect_events"),
        sa.UniqueConstraint("session_id", "seq", name="uq_connect_events_session_seq"),
    )

    op.create_table(
        "link_state_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("link_id", sa.String(200), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("from_state", sa.String(40), nullable=True),
        sa.Column("from_error", sa.String(60), nullable=True),
        sa.Column("to_state", sa.String(40), nullable=False),
        sa.Column("to_error", sa.String(60), nullable=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["links.link_id"],
            name="fk_link_state_changes_link_id_links",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_link_state_changes"),
    )
    op.create_index("ix_link_state_changes_link_at", "link_state_changes", ["link_id", "at"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("link_id", sa.String(200), nullable=True),
        sa.Column("customer_id", sa.String(150), nullable=True),
        sa.Column("outcome", sa.String(30), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_link_at", "audit_log", ["link_id", "at"])
    _make_audit_log_append_only()

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_token", sa.String(200), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("event", sa.String(60), nullable=True),
        sa.Column("link_id", sa.String(200), nullable=True),
        sa.Column("verdict", sa.String(30), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.UniqueConstraint("delivery_token", name="uq_webhook_deliveries_delivery_token"),
    )
    op.create_index("ix_webhook_deliveries_received", "webhook_deliveries", ["received_at"])

    op.create_table(
        "relink_leases",
        sa.Column("link_id", sa.String(200), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("link_id", name="pk_relink_leases"),
    )


def _make_audit_log_append_only() -> None:
    # The audit log is evidence: the database itself refuses to change or remove an entry.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    for table in (
        "relink_leases",
        "webhook_deliveries",
        "audit_log",
        "link_state_changes",
        "connect_events",
        "connect_sessions",
        "accounts",
        "links",
        "institutions",
        "customers",
    ):
        op.drop_table(table)
