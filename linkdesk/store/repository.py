"""Write-side helpers that run inside a ``Store.write()`` unit of work.

They take an open ``Session`` and never commit: the caller's unit of work decides.

Several processes may store the same link, customer or institution at once (workers, webhook
appliers, a discovery run). On SQLite writers take turns (``BEGIN IMMEDIATE``); on PostgreSQL
they do not, so a row is created with ``INSERT … ON CONFLICT DO NOTHING`` (the loser then updates
the winner's row) and a row that is read, compared and rewritten is locked first (``FOR UPDATE``,
which SQLite's compiler leaves out).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from linkdesk.moneykit.models import REFRESH_FAILED
from linkdesk.moneykit.models import Account as ApiAccount
from linkdesk.moneykit.models import Link as ApiLink
from linkdesk.store.counters import count_later
from linkdesk.store.models import (
    Account,
    Base,
    Customer,
    Institution,
    Link,
    LinkCount,
    LinkProduct,
    LinkStateChange,
    WorkerState,
)
from linkdesk.validation import safe_hex_color, safe_logo_url

__all__ = [
    "IMAGE_SLOTS",
    "InstitutionData",
    "LinkUpsert",
    "apply_event_state",
    "customer_from_tags",
    "ensure_customer",
    "ensure_institution",
    "get_named_state",
    "insert_if_absent",
    "link_moved",
    "mark_link_deleted",
    "put_named_state",
    "record_read_state_as_of",
    "replace_accounts",
    "replace_products",
    "touch_link_webhook",
    "upsert_institution",
    "upsert_link",
]

IMAGE_SLOTS = ("logo", "logo_dark", "avatar", "avatar_dark")
_MAX_PRODUCT_ERROR = 500


def customer_from_tags(tags: Iterable[str], prefix: str) -> str | None:
    """The customer id carried by a ``<prefix><id>`` link tag (first one wins)."""
    for tag in tags:
        if isinstance(tag, str) and tag.startswith(prefix):
            value = tag[len(prefix) :].strip()
            if value:
                return value[:150]
    return None


@dataclass(frozen=True, slots=True)
class InstitutionData:
    """An institution ready to store: colours checked, images as data: URIs.

    ``images`` maps a slot (``logo``…) to ``(source_url, data_uri)``; a slot that is absent keeps
    whatever the store holds.
    """

    institution_id: str
    name: str
    domain: str | None = None
    country: str | None = None
    color: str | None = None
    color_dark: str | None = None
    images: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def insert_if_absent(
    session: Session, model: type[Any], values: dict[str, Any], key: list[str]
) -> bool:
    """Insert one row unless a row with the same ``key`` exists (or is being inserted by a
    concurrent transaction, which this one then waits for). True when this call inserted it.
    """
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        stmt = insert(model).values(**values).on_conflict_do_nothing(index_elements=key)
        return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
    try:
        with session.begin_nested():
            session.add(model(**values))
        return True
    except sa.exc.IntegrityError:
        return False


def ensure_customer(session: Session, customer_id: str | None, now: datetime) -> None:
    if not customer_id:
        return
    existing = session.get(Customer, customer_id)
    if existing is None:
        values = {"customer_id": customer_id, "first_seen_at": now, "updated_at": now}
        insert_if_absent(session, Customer, values, ["customer_id"])
    else:
        existing.updated_at = now


def ensure_institution(session: Session, institution_id: str, name: str, now: datetime) -> None:
    """Make sure a row exists so a link can point at it, without touching a full record."""
    if session.get(Institution, institution_id) is None:
        values = {
            "institution_id": institution_id,
            "name": name or institution_id,
            "image_sources": {},
            "updated_at": now,
        }
        insert_if_absent(session, Institution, values, ["institution_id"])


def upsert_institution(session: Session, data: InstitutionData, now: datetime) -> Institution:
    ensure_institution(session, data.institution_id, data.name, now)
    # Locked: the image sources are merged with what is stored, a read-modify-write.
    row = session.get(Institution, data.institution_id, with_for_update=True)
    assert row is not None  # ensured just above, and rows are never deleted
    row.name = data.name or data.institution_id
    row.domain = data.domain
    row.country = data.country
    # Validated again here so nothing unchecked can reach the table whoever calls this.
    row.color = safe_hex_color(data.color)
    row.color_dark = safe_hex_color(data.color_dark)
    sources = dict(row.image_sources or {})
    for slot, (source, value) in data.images.items():
        if slot not in IMAGE_SLOTS:
            continue
        safe = safe_logo_url(value) if value else None
        if safe is None or not safe.startswith("data:"):
            # Remote URLs are never stored (the dashboard must not hot-link); a failed download
            # keeps the previous image and leaves the source unrecorded so the next run retries.
            continue
        setattr(row, slot, safe)
        sources[slot] = source
    row.image_sources = sources
    row.fetched_at = now
    row.updated_at = now
    session.flush()
    return row


@dataclass(frozen=True, slots=True)
class LinkUpsert:
    created: bool
    state_changed: bool
    skipped_as_older: bool = False
    # Stored as deleted, and MoneyKit's read says it is not: the link is back, history kept.
    restored: bool = False

    @property
    def moved(self) -> bool:
        """Whether the link now counts elsewhere in the totals (new, another state or error)."""
        return self.created or self.state_changed or self.restored


def _record_change(
    session: Session,
    link_id: str,
    *,
    from_state: str | None,
    from_error: str | None,
    to_state: str,
    to_error: str | None,
    at: datetime,
    source: str,
) -> None:
    session.add(
        LinkStateChange(
            link_id=link_id,
            at=at,
            from_state=from_state,
            from_error=from_error,
            to_state=to_state,
            to_error=to_error,
            source=source,
        )
    )


def link_moved(
    session: Session,
    before: tuple[str, str | None, str] | None,
    after: tuple[str, str | None, str] | None,
) -> None:
    """A link's (state, error code, bank) changed from ``before`` to ``after`` (None: not
    stored): its count in ``link_counts`` moves with it, as the transaction commits. Every
    writer of the links table calls it (a bulk load counts afresh instead)."""
    if before == after:
        return
    for place, step in ((before, -1), (after, 1)):
        if place is not None:
            state, error_code, bank = place
            key = {"state": state, "error_code": error_code or "", "institution_id": bank}
            count_later(session, LinkCount, key, {"links": step})


def upsert_link(
    session: Session,
    link: ApiLink,
    *,
    customer_id: str | None,
    now: datetime,
    source: str,
    fetched_at: datetime | None = None,
    created_at: datetime | None = None,
) -> LinkUpsert:
    """Insert or update a link from MoneyKit's view of it, recording any state change.

    ``fetched_at`` is when that view was read. If the store already holds a view read later (an
    exchange or relink finished while a sync was in flight), the older view is dropped.
    """
    fetched_at = fetched_at or now
    # Institution before customer before link, the order every writer locks them in, so two
    # transactions never wait for each other in a circle.
    ensure_institution(session, link.institution_id, link.institution_name, now)
    ensure_customer(session, customer_id, now)
    error_code = link.error_code or None
    # Locked: whether this view is newer than the stored one is decided on the row as stored.
    row = session.get(Link, link.link_id, with_for_update=True)
    created = False
    if row is None:
        values = {
            "link_id": link.link_id,
            "customer_id": customer_id,
            "institution_id": link.institution_id,
            "state": link.state,
            "error_code": error_code,
            "provider": link.provider,
            "tags": link.all_tags,
            "created_at": created_at,
            "last_synced_at": fetched_at,
            "products_refreshed_at": link.products_refreshed_at,
            "discovered_at": now,
            "updated_at": now,
            "state_as_of": fetched_at,
        }
        created = insert_if_absent(session, Link, values, ["link_id"])
        if not created:
            # Stored by a concurrent transaction a moment ago: update that row instead.
            row = session.get(Link, link.link_id, with_for_update=True)
            assert row is not None
    if created:
        link_moved(session, None, (link.state, error_code, link.institution_id))
        _record_change(
            session,
            link.link_id,
            from_state=None,
            from_error=None,
            to_state=link.state,
            to_error=error_code,
            at=now,
            source=source,
        )
        return LinkUpsert(created=True, state_changed=True)
    assert row is not None

    if row.last_synced_at is not None and row.last_synced_at > fetched_at:
        return LinkUpsert(created=False, state_changed=False, skipped_as_older=True)

    changed = (row.state, row.error_code) != (link.state, error_code)
    restored = row.state == "deleted" and link.state != "deleted"
    if changed:
        _record_change(
            session,
            row.link_id,
            from_state=row.state,
            from_error=row.error_code,
            to_state=link.state,
            to_error=error_code,
            at=now,
            source=source,
        )
    content_changed = changed or (
        row.institution_id != link.institution_id
        or row.provider != link.provider
        or list(row.tags or []) != link.all_tags
        or (customer_id is not None and row.customer_id != customer_id)
        or row.products_refreshed_at != link.products_refreshed_at
    )
    link_moved(
        session,
        (row.state, row.error_code, row.institution_id),
        (link.state, error_code, link.institution_id),
    )
    row.state = link.state
    row.error_code = error_code
    row.institution_id = link.institution_id
    row.provider = link.provider
    row.tags = link.all_tags
    if customer_id is not None:
        row.customer_id = customer_id
    if created_at is not None:
        row.created_at = created_at
    row.products_refreshed_at = link.products_refreshed_at
    row.last_synced_at = fetched_at
    row.state_as_of = _later(row.state_as_of, fetched_at)
    if content_changed:
        # updated_at means "something about this link changed", the Links page's default order.
        row.updated_at = now
    session.flush()
    return LinkUpsert(created=False, state_changed=changed, restored=restored)


def mark_link_deleted(session: Session, link_id: str, *, now: datetime, source: str) -> bool:
    """Mark a stored link deleted; False if it is unknown or already deleted.

    Call it only when MoneyKit said so for this very link: its own read answered state
    ``deleted`` or 410 ``link_error.deleted``. A listing that lacks the link, or a 404, is not
    that (a proxy, a wrong client id or an upstream bug answer the same), and a wrongly deleted
    link loses its sync job. Its history is kept: a link that comes back is restored by the next
    read (``upsert_link``), with a state change recorded.
    """
    row = session.get(Link, link_id, with_for_update=True)
    if row is None or row.state == "deleted":
        return False
    _record_change(
        session,
        link_id,
        from_state=row.state,
        from_error=row.error_code,
        to_state="deleted",
        to_error=None,
        at=now,
        source=source,
    )
    link_moved(
        session,
        (row.state, row.error_code, row.institution_id),
        ("deleted", None, row.institution_id),
    )
    row.state = "deleted"
    row.error_code = None
    row.updated_at = now
    row.last_synced_at = now
    row.state_as_of = _later(row.state_as_of, now)
    session.flush()
    return True


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


def apply_event_state(
    session: Session,
    link_id: str,
    *,
    state: str,
    error_code: str | None,
    as_of: datetime,
    now: datetime,
) -> bool:
    """Apply a state MoneyKit announced at ``as_of`` (a webhook), unless newer state is stored.

    Used only when MoneyKit cannot be asked directly. Returns True when the state was applied.
    """
    row = session.get(Link, link_id, with_for_update=True)
    if row is None or (row.state_as_of is not None and row.state_as_of >= as_of):
        return False
    error_code = error_code or None
    if (row.state, row.error_code) != (state, error_code):
        _record_change(
            session,
            link_id,
            from_state=row.state,
            from_error=row.error_code,
            to_state=state,
            to_error=error_code,
            at=now,
            source="webhook",
        )
        link_moved(
            session,
            (row.state, row.error_code, row.institution_id),
            (state, error_code, row.institution_id),
        )
        row.state = state
        row.error_code = error_code
        row.updated_at = now
    row.state_as_of = as_of
    session.flush()
    return True


_LINKS = Base.metadata.tables[Link.__tablename__]
_TOUCH_WEBHOOK = (
    sa.update(_LINKS)
    .where(_LINKS.c.link_id == sa.bindparam("link"))
    .values(last_webhook_at=sa.bindparam("at"))
)


def touch_link_webhook(connection: sa.Connection, link_id: str, at: datetime) -> None:
    """Stamp when a webhook for the link last arrived (a Core statement: the receive path's
    transaction is plain Core, thousands a minute in a burst). No row yet: nothing to stamp."""
    connection.execute(_TOUCH_WEBHOOK, {"link": link_id, "at": at})


def record_read_state_as_of(
    session: Session,
    link_id: str,
    *,
    event_at: datetime,
    read_at: datetime,
    now: datetime,
    slack: timedelta,
) -> None:
    """After a read caused by an event at ``event_at``: the stored state is at least as new as
    that event. Only moves ``state_as_of`` forward — except a time more than ``slack`` ahead of
    ``now``, which was pushed there by an event stamped in the future and proves nothing."""
    session.execute(
        sa.update(Link)
        .where(
            Link.link_id == link_id,
            sa.or_(
                Link.state_as_of.is_(None),
                Link.state_as_of < event_at,
                Link.state_as_of > now + slack,
            ),
        )
        .values(state_as_of=max(event_at, read_at))
    )


def replace_products(session: Session, link: ApiLink, now: datetime) -> None:
    """Replace the stored products of ``link`` and its ``refresh_issue`` with MoneyKit's view."""
    session.execute(sa.delete(LinkProduct).where(LinkProduct.link_id == link.link_id))
    for name, status in sorted(link.products.items()):
        if status is None:
            continue
        session.add(
            LinkProduct(
                link_id=link.link_id,
                product=name[:40],
                refreshed_at=status.refreshed_at,
                last_attempted_at=status.last_attempted_at,
                error_code=status.error_code[:60] if status.error_code else None,
                error_message=(
                    status.error_message[:_MAX_PRODUCT_ERROR] if status.error_message else None
                ),
                refresh_state=status.refresh_state,
                updated_at=now,
            )
        )
    row = session.get(Link, link.link_id)
    if row is not None and row.refresh_issue != link.refresh_issue:
        if REFRESH_FAILED in (row.refresh_issue, link.refresh_issue):
            # A refresh failing or recovering is news about the link (the Links page's order);
            # one merely starting or landing is not.
            row.updated_at = now
        row.refresh_issue = link.refresh_issue


def replace_accounts(
    session: Session, link_id: str, accounts: Sequence[ApiAccount], now: datetime
) -> None:
    """Make the link's stored accounts exactly ``accounts``."""
    keep = {a.account_id for a in accounts}
    existing = {
        a.account_id: a
        for a in session.scalars(sa.select(Account).where(Account.link_id == link_id)).all()
    }
    for account_id, row in existing.items():
        if account_id not in keep:
            session.delete(row)
    for account in accounts:
        found = existing.get(account.account_id)
        if found is None:
            row = Account(link_id=link_id, account_id=account.account_id)
            session.add(row)
        else:
            row = found
        row.name = account.name
        row.account_type = account.account_type
        row.mask = account.account_mask[:16] if account.account_mask else None
        currency = account.balances.currency
        row.currency = currency[:3] if currency else None
        row.balance_current = account.balances.current
        row.balance_available = account.balances.available
        row.closed = account.closed
        row.updated_at = now
    session.flush()


def put_named_state(session: Session, name: str, value: dict[str, Any], now: datetime) -> None:
    """Write one shared named fact (``worker_state``), creating the row on first use.

    Insert-if-absent then update: several processes may write the row for the first time at once,
    and a plain read-then-insert would collide on its primary key.
    """
    if not insert_if_absent(
        session, WorkerState, {"name": name, "value": value, "updated_at": now}, ["name"]
    ):
        session.execute(
            sa.update(WorkerState)
            .where(WorkerState.name == name)
            .values(value=value, updated_at=now)
        )


def delete_named_state(session: Session, name: str) -> None:
    session.execute(sa.delete(WorkerState).where(WorkerState.name == name))


def get_named_state(session: Session, name: str) -> dict[str, Any] | None:
    row = session.get(WorkerState, name)
    return dict(row.value or {}) if row is not None else None
