"""One link as its detail panel shows it: the row, its accounts, its state changes, and what
happened around it (sessions, audit, sync attempts, a relink in progress)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import sqlalchemy as sa

from linkdesk.health import HealthThresholds
from linkdesk.read.activity import (
    ActivityReads,
    AuditRow,
    RelinkInProgress,
    SessionRow,
    SyncAttemptRow,
)
from linkdesk.read.link_rows import LinkRow, LinkRows
from linkdesk.store.engine import Store
from linkdesk.store.models import Account, Institution, Link, LinkStateChange

__all__ = ["AccountRow", "LinkDetail", "LinkDetailReads", "StateChangeRow"]


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    name: str
    account_type: str | None
    mask: str | None
    currency: str | None
    balance_current: float | None
    balance_available: float | None
    closed: bool | None


@dataclass(frozen=True, slots=True)
class StateChangeRow:
    at: datetime
    from_state: str | None
    from_error: str | None
    to_state: str
    to_error: str | None
    source: str


@dataclass(frozen=True, slots=True)
class LinkDetail:
    row: LinkRow
    accounts: list[AccountRow] = field(default_factory=list)
    state_changes: list[StateChangeRow] = field(default_factory=list)
    sessions: list[SessionRow] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    relink_in_progress: RelinkInProgress | None = None
    sync_attempts: list[SyncAttemptRow] = field(default_factory=list)


class LinkDetailReads:
    """``clock`` and ``thresholds`` decide the time-dependent verdicts (stuck, stale)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        thresholds: HealthThresholds | None = None,
        activity: ActivityReads | None = None,
    ) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rows = LinkRows(thresholds or HealthThresholds())
        self._activity = activity or ActivityReads(store, clock=self._clock)

    def get_link(self, link_id: str) -> LinkDetail | None:
        with self._store.read() as session:
            found = session.execute(
                sa.select(Link, Institution)
                .join(Institution, Institution.institution_id == Link.institution_id)
                .where(Link.link_id == link_id)
            ).first()
            if found is None:
                return None
            link, institution = found
            now = self._clock()
            accounts = session.scalars(
                sa.select(Account).where(Account.link_id == link_id).order_by(Account.name)
            ).all()
            changes = session.scalars(
                sa.select(LinkStateChange)
                .where(LinkStateChange.link_id == link_id)
                .order_by(LinkStateChange.at.desc(), LinkStateChange.id.desc())
                .limit(50)
            ).all()
            row = self._rows.row(link, institution, now)
            detail = LinkDetail(
                row=row,
                accounts=[
                    AccountRow(
                        account_id=a.account_id,
                        name=a.name,
                        account_type=a.account_type,
                        mask=a.mask,
                        currency=a.currency,
                        balance_current=a.balance_current,
                        balance_available=a.balance_available,
                        closed=a.closed,
                    )
                    for a in accounts
                ],
                state_changes=[
                    StateChangeRow(
                        at=c.at,
                        from_state=c.from_state,
                        from_error=c.from_error,
                        to_state=c.to_state,
                        to_error=c.to_error,
                        source=c.source,
                    )
                    for c in changes
                ],
            )
        return replace(
            detail,
            sessions=self._activity.recent_sessions(20, link_id=link_id),
            audit=self._activity.audit_entries(20, link_id=link_id),
            relink_in_progress=self._activity.relink_in_progress(link_id),
            sync_attempts=self._activity.sync_attempts(20, link_id=link_id),
        )
