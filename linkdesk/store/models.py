"""Tables of the Linkdesk store (SQLAlchemy 2 typed mappings).

The Alembic migrations in ``migrations/versions`` create exactly these tables; a unit test compares
the two so they cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    event,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "Account",
    "Alert",
    "AlertBankBucket",
    "AlertEvent",
    "AlertNotification",
    "AlertRule",
    "AlertSilence",
    "AlertState",
    "AuditEntry",
    "AuditLogIsAppendOnly",
    "Base",
    "ConnectEvent",
    "ConnectSession",
    "Customer",
    "CustomerEmail",
    "CustomerLinkToken",
    "Institution",
    "Link",
    "LinkProduct",
    "LinkStateChange",
    "OutreachCampaign",
    "OutreachMessage",
    "OutreachTemplate",
    "RelinkLease",
    "SignInFailure",
    "StaffSession",
    "StaffUser",
    "SyncAttempt",
    "SyncJob",
    "UTCDateTime",
    "WebhookDelivery",
    "WebhookEvent",
    "WorkerState",
]

# Named constraints keep migrations reproducible across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _utcnow() -> datetime:
    # A Python-side default for code that builds rows directly (fixtures, scripts); services
    # always pass their injected clock's time explicitly.
    return datetime.now(UTC)


class AuditLogIsAppendOnly(RuntimeError):
    """Raised when code tries to change or remove an audit entry."""


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC without an offset and hands back aware UTC datetimes.

    SQLite has no timezone type; storing naive UTC everywhere keeps string order equal to time
    order, which the keyset pagination relies on.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


class Customer(Base):
    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(String(150), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)


class Institution(Base):
    __tablename__ = "institutions"

    institution_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    domain: Mapped[str | None] = mapped_column(String(300))
    country: Mapped[str | None] = mapped_column(String(8))
    # Only validated values are stored: hex colours and data: URIs (see linkdesk.validation).
    color: Mapped[str | None] = mapped_column(String(7))
    color_dark: Mapped[str | None] = mapped_column(String(7))
    logo: Mapped[str | None] = mapped_column(Text)
    logo_dark: Mapped[str | None] = mapped_column(Text)
    avatar: Mapped[str | None] = mapped_column(Text)
    avatar_dark: Mapped[str | None] = mapped_column(Text)
    # Where each stored image came from, so an unchanged image is not downloaded again.
    image_sources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fetched_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)

    __table_args__ = (Index("ix_institutions_name", "name"),)


class Link(Base):
    __tablename__ = "links"

    link_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(
        String(150), ForeignKey("customers.customer_id")
    )
    institution_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("institutions.institution_id")
    )
    state: Mapped[str] = mapped_column(String(40))
    error_code: Mapped[str | None] = mapped_column(String(60))
    provider: Mapped[str | None] = mapped_column(String(40))
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime | None]
    last_synced_at: Mapped[datetime | None]
    products_refreshed_at: Mapped[datetime | None]
    discovered_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)
    # How recent the stored state is: the time it was read from MoneyKit, or the timestamp of
    # the webhook it came from. An event older than this never overwrites the state.
    state_as_of: Mapped[datetime | None]
    last_webhook_at: Mapped[datetime | None]
    # The worst product refresh as MoneyKit last reported it: "failed", "pending" (in progress)
    # or NULL (none of either); the per-product detail is in link_products.
    refresh_issue: Mapped[str | None] = mapped_column(String(20))

    __table_args__ = (
        # Each filter of the Links page, followed by the default sort key, so a filtered page is
        # an index range scan rather than a table scan.
        Index("ix_links_updated", "updated_at", "link_id"),
        Index("ix_links_state_updated", "state", "updated_at", "link_id"),
        Index("ix_links_error_updated", "error_code", "updated_at", "link_id"),
        Index("ix_links_institution_updated", "institution_id", "updated_at", "link_id"),
        Index("ix_links_customer", "customer_id", "link_id"),
        # The Links page's sorts by customer and by state/error sort on these expressions
        # (NULL as ''), so the first page of each sort is read in index order, not sorted.
        Index("ix_links_customer_sort", text("coalesce(customer_id, '')"), "link_id"),
        Index("ix_links_state_error_sort", "state", text("coalesce(error_code, '')"), "link_id"),
        # Links of a state, error code and bank counted without reading a row (the Links
        # page's counts of those filters; the shared totals read link_counts instead).
        Index("ix_links_state_error_bank", "state", "error_code", "institution_id"),
        # The health filters "stale" and "healthy" compare this expression with a cutoff that
        # moves with the clock (linkdesk.health); a range over it finds the stale few directly,
        # and their update times are here too, so sorting them by update time reads no rows.
        Index(
            "ix_links_state_fresh_updated",
            "state",
            text("coalesce(products_refreshed_at, created_at, discovered_at)"),
            "updated_at",
            "link_id",
            # PostgreSQL reads an index alone only when it holds the expression's columns.
            postgresql_include=["products_refreshed_at", "created_at", "discovered_at"],
        ),
        # Sort by bank name: institutions in name order, then each one's links by id.
        Index("ix_links_institution_link", "institution_id", "link_id"),
        # Links whose product refresh failed or is pending, counted by state (linkdesk.health).
        Index("ix_links_refresh_issue", "refresh_issue", "state"),
    )


class LinkCount(Base):
    """Rollup for the shared totals: links per state, error code ('' for none) and bank, kept
    by the links' writers in the same transaction as each change (``store.counters``), so the
    totals read these few rows, never the links. A count is the sum of its shards."""

    __tablename__ = "link_counts"

    state: Mapped[str] = mapped_column(String(40), primary_key=True)
    error_code: Mapped[str] = mapped_column(String(60), primary_key=True)
    institution_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    links: Mapped[int] = mapped_column(Integer, default=0)


class LinkProduct(Base):
    """One product of a link (accounts, transactions, ...) as MoneyKit last reported it."""

    __tablename__ = "link_products"

    link_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("links.link_id", ondelete="CASCADE"), primary_key=True
    )
    product: Mapped[str] = mapped_column(String(40), primary_key=True)
    refreshed_at: Mapped[datetime | None]
    last_attempted_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(String(500))
    # "fetched", "not_fetched", "pending" or "failed" (linkdesk.moneykit.models.refresh_state).
    refresh_state: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)


class Account(Base):
    __tablename__ = "accounts"

    link_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("links.link_id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    account_type: Mapped[str | None] = mapped_column(String(80))
    mask: Mapped[str | None] = mapped_column(String(16))
    currency: Mapped[str | None] = mapped_column(String(3))
    balance_current: Mapped[float | None] = mapped_column(Float)
    balance_available: Mapped[float | None] = mapped_column(Float)
    closed: Mapped[bool | None]
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)


class ConnectSession(Base):
    __tablename__ = "connect_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(10))  # link | relink
    customer_id: Mapped[str | None] = mapped_column(String(150))
    link_id: Mapped[str | None] = mapped_column(String(200))
    started_by: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=_utcnow)
    # pending | success | exit | failed
    outcome: Mapped[str] = mapped_column(String(10), default="pending")
    exit_error_id: Mapped[str | None] = mapped_column(String(100))
    exit_message: Mapped[str | None] = mapped_column(Text)
    exit_request_id: Mapped[str | None] = mapped_column(String(200))
    failure_message: Mapped[str | None] = mapped_column(Text)
    # Set by the one apply that wins the right to finish the session (exchange or relink); the
    # conditional UPDATE on this column is what makes the exchange happen exactly once.
    completion_claimed_at: Mapped[datetime | None]
    exchanged_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # SHA-256 of the link-session token: enough to correlate, useless to an attacker.
    token_sha256: Mapped[str | None] = mapped_column(String(64))
    # The session's bank as soon as it is known: the link's for a relink (at start) and for a
    # success (at the exchange), else the last one picked in Connect (its select_institution
    # event). Kept with the session so that counting sessions by bank joins nothing.
    institution_id: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        # By start time, with what the funnel filters on (mode, outcome, bank): the sessions of
        # a window it still reads (abandoned ones, screens) are this index's range alone.
        Index("ix_connect_sessions_started", "started_at", "mode", "outcome", "institution_id"),
        Index("ix_connect_sessions_link", "link_id", "started_at"),
        # A customer's timeline: their sessions by customer (with the link index, each side of
        # "this customer's, or one of their links'" is one index range instead of a scan).
        Index("ix_connect_sessions_customer", "customer_id", "started_at"),
        # The Overview's relinks of the last 30 days: the relink sessions only, not every one.
        Index("ix_connect_sessions_mode_started", "mode", "started_at"),
        Index("ix_connect_sessions_actor_outcome", "started_by", "outcome", "started_at"),
    )


class ConnectSessionDay(Base):
    """Rollup for the Connect funnel: sessions per UTC day of their start, mode, bank, outcome
    and exit error (no bank, no exit error: ''), kept by the sessions' writers in the same
    transaction as each change (``store.funnel_rollup``), so the funnel's counts read these
    rows, never the sessions. A count is the sum of its shards."""

    __tablename__ = "connect_session_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    mode: Mapped[str] = mapped_column(String(10), primary_key=True)
    institution_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(10), primary_key=True)
    exit_error_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    # Connect's success or exit is logged (a pending session without it was abandoned).
    end_logged: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    sessions: Mapped[int] = mapped_column(Integer, default=0)


class ConnectScreenDay(Base):
    """Rollup for the Connect funnel's screens: per UTC day of the sessions' start, mode, bank
    and screen, the sessions that reached it, those whose last screen it was without success,
    and the time from showing it to the next logged entry (a sum, and the visits timed). Kept
    like ``ConnectSessionDay``, so the screens read these rows, never the events."""

    __tablename__ = "connect_screen_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    mode: Mapped[str] = mapped_column(String(10), primary_key=True)
    institution_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    screen: Mapped[str] = mapped_column(String(100), primary_key=True)
    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    reached: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)
    milliseconds: Mapped[int] = mapped_column(BigInteger, default=0)
    samples: Mapped[int] = mapped_column(Integer, default=0)


class ConnectEvent(Base):
    __tablename__ = "connect_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("connect_sessions.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(20))
    name: Mapped[str | None] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime | None]
    recorded_at: Mapped[datetime] = mapped_column(default=_utcnow)

    __table_args__ = (UniqueConstraint("session_id", "seq", name="uq_connect_events_session_seq"),)


class LinkStateChange(Base):
    __tablename__ = "link_state_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    link_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("links.link_id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(default=_utcnow)
    from_state: Mapped[str | None] = mapped_column(String(40))
    from_error: Mapped[str | None] = mapped_column(String(60))
    to_state: Mapped[str] = mapped_column(String(40))
    to_error: Mapped[str | None] = mapped_column(String(60))
    source: Mapped[str] = mapped_column(String(20))  # sync | connect | relink | webhook

    __table_args__ = (Index("ix_link_state_changes_link_at", "link_id", "at"),)


class AuditEntry(Base):
    """Append-only (SQLite triggers refuse UPDATE and DELETE)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=_utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    link_id: Mapped[str | None] = mapped_column(String(200))
    customer_id: Mapped[str | None] = mapped_column(String(150))
    outcome: Mapped[str] = mapped_column(String(30))
    detail: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str | None] = mapped_column(String(20))
    # The reason the staff member typed (why they relinked, why they sent a customer link).
    reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_link_at", "link_id", "at"),
        Index("ix_audit_log_actor_at", "actor", "at"),
        Index("ix_audit_log_action_at", "action", "at"),
        Index("ix_audit_log_customer_at", "customer_id", "at"),
    )


@event.listens_for(AuditEntry, "before_update")
def _refuse_audit_update(*_args: Any) -> None:
    # The database refuses too (triggers); failing here gives a clear error before any SQL.
    raise AuditLogIsAppendOnly("audit_log is append-only: entries cannot be changed")


@event.listens_for(AuditEntry, "before_delete")
def _refuse_audit_delete(*_args: Any) -> None:
    raise AuditLogIsAppendOnly("audit_log is append-only: entries cannot be removed")


class WebhookDelivery(Base):
    """Every webhook request received, whatever its verdict (evidence for support)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Not unique: every attempt of a delivery is recorded, duplicates included.
    delivery_token: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(default=_utcnow)
    event: Mapped[str | None] = mapped_column(String(60))
    link_id: Mapped[str | None] = mapped_column(String(200))
    verdict: Mapped[str] = mapped_column(String(30))  # accepted | duplicate | rejected
    # Only verified payloads are kept; a forged body is never stored.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(40))
    event_timestamp: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_webhook_deliveries_received", "received_at"),
        Index("ix_webhook_deliveries_delivery_token", "delivery_token"),
        Index("ix_webhook_deliveries_link_received", "link_id", "received_at"),
    )


class WebhookEvent(Base):
    """A verified event, once per idempotency key: the durable queue of work to apply."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    delivery_token: Mapped[str | None] = mapped_column(String(200), unique=True)
    event: Mapped[str] = mapped_column(String(60))
    link_id: Mapped[str] = mapped_column(String(200))
    webhook_timestamp: Mapped[datetime]
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(default=_utcnow)
    # pending | applied | stale_ignored | failed
    status: Mapped[str] = mapped_column(String(20), default="pending")
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    detail: Mapped[str | None] = mapped_column(String(300))

    __table_args__ = (
        Index("ix_webhook_events_status_ts", "status", "webhook_timestamp", "id"),
        # The Overview's webhook lag: the oldest pending event by receipt, one index seek.
        Index("ix_webhook_events_status_received", "status", "received_at"),
        Index("ix_webhook_events_link", "link_id", "webhook_timestamp"),
    )


class RelinkLease(Base):
    """Who is relinking a link right now; stops two staff members repairing the same link."""

    __tablename__ = "relink_leases"

    link_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    session_id: Mapped[str] = mapped_column(String(64))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class SyncJob(Base):
    """The worker's durable queue: one row per link (``link:<id>``) plus ``discovery``.

    A job is claimed by setting ``claimed_by``/``claimed_until`` with a conditional UPDATE; a
    worker that dies leaves the claim to expire, and another worker retakes the job.
    """

    __tablename__ = "sync_jobs"

    id: Mapped[str] = mapped_column(String(220), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # link | discovery
    link_id: Mapped[str | None] = mapped_column(String(200))
    due_at: Mapped[datetime]
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_run_at: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)

    __table_args__ = (
        Index("ix_sync_jobs_due", "due_at", "priority"),
        Index("ix_sync_jobs_link", "link_id"),
        # worker_status counts claimed jobs and due, unclaimed ones; without these each count
        # reads the job rows themselves (a million of them when the worker falls behind).
        Index("ix_sync_jobs_claimed", "claimed_until"),
        Index("ix_sync_jobs_due_claimed", "due_at", "claimed_until"),
    )


class SyncAttempt(Base):
    """History: one row per job run (for the dashboard's worker panel and link timeline)."""

    __tablename__ = "sync_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    link_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(default=_utcnow)
    # ok | error | rate_limited | deleted | skipped
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(100))

    __table_args__ = (
        Index("ix_sync_attempts_at", "at"),
        Index("ix_sync_attempts_link_at", "link_id", "at"),
    )


class WorkerState(Base):
    """Small named facts shared by every process: the worker's pause switch and last round, the
    last count of links per verdict."""

    __tablename__ = "worker_state"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)


class CustomerLinkToken(Base):
    """A relink link sent to a customer. Only a hash of the token is kept."""

    __tablename__ = "customer_link_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    link_id: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[str | None] = mapped_column(String(150))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)
    used_at: Mapped[datetime | None]
    session_id: Mapped[str | None] = mapped_column(String(64))
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(20))
    # First time the customer's repair page validated the token (outreach tracking: "opened").
    opened_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_customer_link_tokens_link", "link_id", "created_at"),)

    @classmethod
    def live_at(cls, now: datetime) -> ColumnElement[bool]:
        """Tokens a customer could still use at ``now``: not used, not expired."""
        return and_(cls.used_at.is_(None), cls.expires_at > now)


class CustomerEmail(Base):
    """Where a customer's relink emails go: MoneyKit's ``customer_user.email``, else an import.

    Kept apart from ``customers`` so an address imported before the customer's first link is
    synced is not lost, and a demo reset (which empties link data) keeps the addresses.
    """

    __tablename__ = "customer_emails"

    customer_id: Mapped[str] = mapped_column(String(150), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    source: Mapped[str] = mapped_column(String(20))  # moneykit | import
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))


class OutreachTemplate(Base):
    """The relink email admins edit (one row per template name; ``relink`` is the one used)."""

    __tablename__ = "outreach_templates"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_by: Mapped[str] = mapped_column(String(200))


class OutreachCampaign(Base):
    """One "email relink links to these customers" run, sent in the background.

    A process sends it while it holds the claim (``claimed_by``/``claimed_until``, renewed per
    message), so a campaign whose sender died can be resumed by another process.
    """

    __tablename__ = "outreach_campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    # The Links filters the campaign was started from, and their description for people.
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str] = mapped_column(String(500))
    repair_base_url: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))  # sending | done
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    claimed_until: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_outreach_campaigns_created", "created_at"),)


class OutreachMessage(Base):
    """One email of a campaign: one link of one customer, and what became of it."""

    __tablename__ = "outreach_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("outreach_campaigns.id", ondelete="CASCADE")
    )
    link_id: Mapped[str] = mapped_column(String(200))
    customer_id: Mapped[str | None] = mapped_column(String(150))
    institution_id: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    # pending | sending | sent | failed | skipped
    status: Mapped[str] = mapped_column(String(20))
    detail: Mapped[str | None] = mapped_column(String(500))
    token_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=_utcnow)
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_outreach_messages_campaign", "campaign_id", "status", "id"),
        Index("ix_outreach_messages_link", "link_id", "created_at"),
        Index("ix_outreach_messages_customer", "customer_id", "created_at"),
        Index("ix_outreach_messages_sent", "sent_at"),
    )


class AlertRule(Base):
    """One alert rule (Alerts page). Defaults are created on first start; admins edit them."""

    __tablename__ = "alert_rules"

    id: Mapped[str] = mapped_column(String(60), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    renotify_minutes: Mapped[int] = mapped_column(Integer, default=60)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)
    updated_by: Mapped[str] = mapped_column(String(200), default="linkdesk")


class Alert(Base):
    """One incident of one rule for one key (a bank, or '' for app-wide rules).

    ``open_key`` is ``<rule>|<key>`` while the incident lasts and NULL once it is resolved: its
    unique constraint is what keeps one open alert per incident when several processes evaluate
    the rules at the same moment.
    """

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(String(60))
    key: Mapped[str] = mapped_column(String(200), default="")
    open_key: Mapped[str | None] = mapped_column(String(270), unique=True)
    status: Mapped[str] = mapped_column(String(20), default="firing")  # firing | resolved
    title: Mapped[str] = mapped_column(String(300))
    value: Mapped[float] = mapped_column(Float, default=0.0)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]  # when its value last changed (or it was reminded)
    last_notified_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    acknowledged_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_alerts_status_started", "status", "started_at"),
        Index("ix_alerts_started", "started_at"),
    )


class AlertEvent(Base):
    """What happened to an alert, and who did it: fired, notified, acknowledged, silenced…"""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(Integer, ForeignKey("alerts.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(30))
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_alert_events_alert_at", "alert_id", "at"),
        Index("ix_alert_events_at", "at"),
    )


class AlertSilence(Base):
    """No notifications for a rule (and key, when set) until ``until``; why, and who said so."""

    __tablename__ = "alert_silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule_id: Mapped[str] = mapped_column(String(60))
    key: Mapped[str | None] = mapped_column(String(200))
    until: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_alert_silences_rule_until", "rule_id", "until"),)


class AlertNotification(Base):
    """The outbox: one message for one channel, sent by a delivery thread, retried with backoff.

    Rows are written in the transaction that fires, reminds or resolves the alert, so a message
    exists exactly when its alert change does, and a slow or failing channel never holds up the
    evaluation.
    """

    __tablename__ = "alert_notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(Integer, ForeignKey("alerts.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(20))  # slack | webhook | email
    kind: Mapped[str] = mapped_column(String(20))  # fired | reminder | resolved
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_alert_notifications_status_next", "status", "next_attempt_at"),
        Index("ix_alert_notifications_alert", "alert_id"),
    )


class AlertBankBucket(Base):
    """Rollup for the error-spike rule: per bank and five-minute bucket, how many links entered
    an error state and how many came back. Filled from ``link_state_changes`` incrementally, so
    evaluating the rule reads these few rows, never the links table."""

    __tablename__ = "alert_bank_buckets"

    institution_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    broke: Mapped[int] = mapped_column(Integer, default=0)
    recovered: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_alert_bank_buckets_start", "bucket_start"),)


class StateChangeDay(Base):
    """Rollup for the Overview's trend: per UTC day, how the number of links in
    ``auth_expired`` and needing a relink moved with that day's state changes (entered minus
    left). Filled with the error-spike buckets from the same changes, so the trend of the last
    90 days is the count now less the moves after each day: a few rows, never the history."""

    __tablename__ = "state_change_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    auth_expired: Mapped[int] = mapped_column(Integer, default=0)
    needs_relink: Mapped[int] = mapped_column(Integer, default=0)


class AlertState(Base):
    """Small counters of the alert evaluation shared by every process: the rollup's position,
    the number of links needing relink as of a position, samples for growth rules. Positions are
    compared-and-set, so two evaluators never roll the same state changes up twice."""

    __tablename__ = "alert_state"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, default=0)
    # The rollup position (a link_state_changes id) that ``number`` is right at.
    position: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=_utcnow)


class StaffUser(Base):
    """A local staff account added with ``python -m linkdesk user add`` (argon2id hash only)."""

    __tablename__ = "staff_users"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class StaffSession(Base):
    """A signed-in browser. Only hashes of its cookie token and of its one-time handoff code
    are kept; a revoked or expired row signs every tab of that browser out."""

    __tablename__ = "staff_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    handoff_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    handoff_expires_at: Mapped[datetime | None]
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    client: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_by: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (Index("ix_staff_sessions_name", "name", "created_at"),)


class SignInFailure(Base):
    """A wrong password, counted per account and per client by every replica (throttling)."""

    __tablename__ = "sign_in_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    username: Mapped[str] = mapped_column(String(100))
    client: Mapped[str] = mapped_column(String(100))

    __table_args__ = (
        Index("ix_sign_in_failures_username", "username", "at"),
        Index("ix_sign_in_failures_client", "client", "at"),
    )
