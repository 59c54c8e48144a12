"""Connect sessions: start a link or relink, then apply the component's event log.

One service for its callers, built from two halves with one reason to change each:

* :class:`~linkdesk.services.connect_start.SessionStarter`: opening Connect and the relink
  reservation (resume, release, take over, abandon);
* :class:`~linkdesk.services.connect_finish.LogApplier`: storing the component's log and acting
  once on the session's end (token exchange, relink confirmed by MoneyKit, exit).

Staff-facing text and redaction live in :mod:`~linkdesk.services.connect_text`; every write to
the Connect tables in :mod:`linkdesk.store.connect_repository`.
"""

from __future__ import annotations

import sqlalchemy as sa

from linkdesk.auth import Actor
from linkdesk.read.activity import SessionRow, session_row
from linkdesk.services.connect_base import ApplyOutcome, Outcome, StartedSession
from linkdesk.services.connect_finish import LogApplier
from linkdesk.services.connect_start import SessionStarter
from linkdesk.services.connect_text import exit_message
from linkdesk.store.models import ConnectEvent, ConnectSession

__all__ = [
    "ApplyOutcome",
    "ConnectService",
    "Outcome",
    "StartedSession",
    "exit_message",
]


class ConnectService(SessionStarter, LogApplier):
    def get_session(self, session_id: str) -> SessionRow | None:
        with self._store.read() as session:
            row = session.get(ConnectSession, session_id)
            if row is None:
                return None
            count = session.execute(
                sa.select(sa.func.count()).where(ConnectEvent.session_id == session_id)
            ).scalar_one()
            return session_row(row, int(count))

    def latest_pending_session(self, *, actor: Actor | str) -> SessionRow | None:
        """The newest unfinished session ``actor`` started (for the OAuth return page)."""
        actor = actor.name if isinstance(actor, Actor) else actor
        with self._store.read() as session:
            row = session.scalars(
                sa.select(ConnectSession)
                .where(ConnectSession.started_by == actor, ConnectSession.outcome == "pending")
                .order_by(ConnectSession.started_at.desc())
                .limit(1)
            ).first()
            session_id = row.id if row is not None else None
        return self.get_session(session_id) if session_id else None
