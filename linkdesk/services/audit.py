"""The audit log: who (and in which role) did what to which link, why, when, and how it ended.

Append-only: this class has no way to change or remove an entry, the ORM refuses updates and
deletes of ``AuditEntry`` rows, and the database refuses them too (triggers).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from linkdesk.auth import Actor, Permission, require
from linkdesk.read.activity import ActivityReads, AuditRow
from linkdesk.store.engine import Store
from linkdesk.store.models import AuditEntry

__all__ = ["AuditLog"]

_MAX_DETAIL = 2000
_MAX_REASON = 1000


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _clean(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    cleaned = text.strip()
    return cleaned[:limit] or None


class AuditLog:
    def __init__(self, store: Store, *, clock: Callable[[], datetime] | None = None) -> None:
        self._store = store
        self._clock = clock or _utcnow

    def add(
        self,
        session: Session,
        *,
        actor: Actor | str,
        action: str,
        outcome: str,
        link_id: str | None = None,
        customer_id: str | None = None,
        detail: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Append an entry inside the caller's unit of work (it commits with the change).

        ``actor`` is a staff :class:`Actor` (name and role are recorded) or the name of a
        machine actor (``sync``, ``worker``, ``customer-link:…``), recorded without a role.
        """
        name = actor.name if isinstance(actor, Actor) else actor
        session.add(
            AuditEntry(
                at=self._clock(),
                actor=name[:200],
                role=actor.role.value if isinstance(actor, Actor) else None,
                action=action[:60],
                link_id=link_id,
                customer_id=customer_id,
                outcome=outcome[:30],
                detail=_clean(detail, _MAX_DETAIL),
                reason=_clean(reason, _MAX_REASON),
            )
        )

    def record(
        self,
        *,
        actor: Actor | str,
        action: str,
        outcome: str,
        link_id: str | None = None,
        customer_id: str | None = None,
        detail: str | None = None,
        reason: str | None = None,
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
                reason=reason,
            )

    def add_note(
        self, actor: Actor, *, link_id: str, text: str, customer_id: str | None = None
    ) -> None:
        """A support note on a link (kept in the audit log, so it can never be edited away)."""
        require(actor, Permission.NOTE)
        note = _clean(text, _MAX_DETAIL)
        if note is None:
            raise ValueError("a note needs some text")
        self.record(
            actor=actor,
            action="link.note",
            outcome="added",
            link_id=link_id,
            customer_id=customer_id,
            detail=note,
        )

    def entries(
        self,
        limit: int = 50,
        *,
        actor: str | None = None,
        action: str | None = None,
        link_id: str | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AuditRow]:
        """Newest first, filtered; ``action`` ending in ``.`` or ``*`` is a prefix."""
        return ActivityReads(self._store).audit_entries(
            limit,
            link_id=link_id,
            actor=actor,
            action=action,
            customer_id=customer_id,
            since=since,
            until=until,
        )
