"""The audit log: who did what to which link, when, and how it ended. Append-only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from linkdesk.store.engine import Store
from linkdesk.store.models import AuditEntry
from linkdesk.store.queries import AuditRow, LinkQueries

__all__ = ["AuditLog"]

_MAX_DETAIL = 2000


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    def __init__(self, store: Store, *, clock: Callable[[], datetime] | None = None) -> None:
        self._store = store
        self._clock = clock or _utcnow

    def add(
        self,
        session: Session,
        *,
        actor: str,
        action: str,
        outcome: str,
        link_id: str | None = None,
        customer_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Append an entry inside the caller's unit of work (it commits with the change)."""
        session.add(
            AuditEntry(
                at=self._clock(),
                actor=actor[:200],
                action=action[:60],
                link_id=link_id,
                customer_id=customer_id,
                outcome=outcome[:30],
                detail=detail[:_MAX_DETAIL] if detail else None,
            )
        )

    def record(
        self,
        *,
        actor: str,
        action: str,
        outcome: str,
        link_id: str | None = None,
        customer_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Append an entry in its own transaction."""
        with self._store.write() as session:
            self.add(
                session,
                actor=actor,
                action=action,
                outcome=outcome,
                link_id=link_id,
                customer_id=customer_id,
                detail=detail,
            )

    def entries(self, limit: int = 50, *, link_id: str | None = None) -> list[AuditRow]:
        return LinkQueries(self._store).audit_entries(limit, link_id=link_id)
