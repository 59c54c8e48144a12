"""Opening Connect: a new link for a customer, or a relink of one link under a reservation.

A relink holds a lease on its link for the session's life (``relink_lease_minutes``): two agents
cannot send the same customer through Connect twice. The holder can resume or release it, an
admin can take it over, and the person who opened Connect can abandon it.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from typing import Literal

from sqlalchemy.orm import Session

from linkdesk.auth import Actor, Permission, require
from linkdesk.health import Health, link_health
from linkdesk.moneykit.errors import GoneError, MoneyKitError, NotFoundError
from linkdesk.moneykit.models import LinkSession
from linkdesk.services.connect_base import ConnectBase, StartedSession
from linkdesk.services.connect_text import MAX_TEXT
from linkdesk.services.errors import (
    InvalidCustomerId,
    LeaseHeld,
    LeaseNotHeld,
    LinkNotFound,
    LinkUnavailable,
    ReasonRequired,
    RelinkNotNeeded,
    UnknownSession,
)
from linkdesk.store import connect_repository as repo
from linkdesk.store.models import ConnectSession, Link
from linkdesk.store.repository import mark_link_deleted

__all__ = ["SOURCE_TAG", "SessionStarter"]

SOURCE_TAG = "source:linkdesk"
_CUSTOMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+\-]{3,149}")


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStarter(ConnectBase):
    def _customer_tag(self, customer_id: str) -> str:
        return f"{self._settings.customer_tag_prefix}{customer_id}"

    def _record_start(
        self,
        *,
        session_id: str,
        mode: str,
        customer_id: str | None,
        link_id: str | None,
        actor: Actor | str,
        token: str | None,
        error: MoneyKitError | None,
        reason: str | None = None,
    ) -> None:
        now = self._clock()
        actor_name = actor.name if isinstance(actor, Actor) else actor
        with self._store.write() as session:
            repo.record_session_start(
                session,
                session_id=session_id,
                mode=mode,
                customer_id=customer_id,
                link_id=link_id,
                started_by=actor_name,
                now=now,
                failure_message=error.user_message if error else None,
                token_sha256=_token_hash(token) if token else None,
            )
            self._audit.add(
                session,
                actor=actor,
                action=f"connect.start_{mode}",
                outcome="failed" if error else "started",
                link_id=link_id,
                customer_id=customer_id,
                detail=str(error) if error else f"session {session_id}",
                reason=reason,
            )
            if error is not None and link_id is not None:
                repo.release_lease(session, link_id, session_id)
        self._tell_observers(mode, "failed" if error else "started")

    def _open_session(
        self,
        *,
        session_id: str,
        mode: Literal["link", "relink"],
        customer_id: str | None,
        link_id: str | None,
        actor: Actor | str,
        reason: str | None,
        create: Callable[[], LinkSession],
    ) -> StartedSession:
        """Create the link session at MoneyKit and record the start, whether it worked or not."""

        def record(token: str | None, error: MoneyKitError | None) -> None:
            self._record_start(
                session_id=session_id,
                mode=mode,
                customer_id=customer_id,
                link_id=link_id,
                actor=actor,
                token=token,
                error=error,
                reason=reason,
            )

        try:
            created = create()
        except MoneyKitError as exc:
            record(None, exc)
            raise
        record(created.link_session_token, None)
        return StartedSession(
            session_id=session_id,
            link_session_token=created.link_session_token,
            mode=mode,
            link_id=link_id,
        )

    def start_link(
        self, *, customer_external_id: str, actor: Actor | str, reason: str | None = None
    ) -> StartedSession:
        """Create a MoneyKit link session for a new link of ``customer_external_id``.

        Needs the ``link.start`` permission (support or admin).
        """
        actor = self._actor(actor)
        require(actor, Permission.START_LINK)
        customer_id = (customer_external_id or "").strip()
        if not _CUSTOMER_ID.fullmatch(customer_id):
            raise InvalidCustomerId(
                "use 4 to 150 letters, digits or . _ @ : + - (starting with a letter or digit)."
            )
        return self._open_session(
            session_id=uuid.uuid4().hex,
            mode="link",
            customer_id=customer_id,
            link_id=None,
            actor=actor,
            reason=reason,
            create=lambda: self._client.create_link_session(
                customer_user_id=customer_id,
                redirect_uri=self._settings.redirect_uri,
                webhook=self._settings.webhook_url,
                link_tags=[self._customer_tag(customer_id), SOURCE_TAG],
            ),
        )

    def _take_lease(self, link_id: str, holder: str, session_id: str) -> None:
        """Reserve ``link_id`` for ``holder``, atomically in the database (see
        :func:`~linkdesk.store.connect_repository.take_lease`): two processes racing for the
        same link cannot both win."""
        now = self._clock()
        values = {
            "link_id": link_id,
            "holder": holder[:200],
            "session_id": session_id,
            "acquired_at": now,
            "expires_at": now + self._lease_ttl,
        }
        with self._store.write() as session:
            held = repo.take_lease(session, values, now)
        if held is not None:
            raise LeaseHeld(link_id, *held)

    def start_relink(
        self, *, link_id: str, actor: Actor | str, reason: str | None = None
    ) -> StartedSession:
        """Create a link session that repairs ``link_id``.

        Needs the ``link.relink`` permission (support or admin). The link is re-read from
        MoneyKit first, so a link that has meanwhile recovered is not sent through Connect
        again. Raises ``RelinkNotNeeded`` unless the link needs the customer, and ``LeaseHeld``
        while someone else is relinking it. ``reason`` (typed by the agent) goes to the audit.
        """
        actor = self._actor(actor)
        require(actor, Permission.RELINK)
        return self.start_relink_as(link_id=link_id, actor=actor, holder=actor.name, reason=reason)

    def _refuse_relink(
        self,
        actor: Actor | str,
        link_id: str,
        customer_id: str | None,
        detail: str,
        reason: str | None,
    ) -> None:
        self._audit.record(
            actor=actor,
            action="connect.start_relink",
            outcome="refused",
            link_id=link_id,
            customer_id=customer_id,
            detail=detail,
            reason=reason,
        )

    def start_relink_as(
        self,
        *,
        link_id: str,
        actor: Actor | str,
        holder: str,
        reason: str | None = None,
    ) -> StartedSession:
        """:meth:`start_relink` without the role check, for callers that authorised it already
        (a customer redeeming a signed relink link). ``holder`` names the lease holder.
        """
        with self._store.read() as session:
            stored = session.get(Link, link_id)
            if stored is None:
                raise LinkNotFound(link_id)
            stored_customer = stored.customer_id

        fetched_at = self._clock()
        try:
            live = self._client.get_link(link_id)
        except GoneError as exc:
            with self._store.write() as session:
                mark_link_deleted(session, link_id, now=self._clock(), source="relink")
                self._audit.add(
                    session,
                    actor=actor,
                    action="connect.start_relink",
                    outcome="refused",
                    link_id=link_id,
                    customer_id=stored_customer,
                    detail=f"link is gone at MoneyKit: {exc}",
                    reason=reason,
                )
            raise RelinkNotNeeded(link_id, Health.DELETED.value, "deleted", None) from exc
        except NotFoundError as exc:
            # A 404 is not MoneyKit saying the link was deleted (that is a 410, or state
            # "deleted"): a wrong client id or a proxy answers 404 too. Nothing is changed;
            # the worker reads the link again later.
            self._refuse_relink(
                actor,
                link_id,
                stored_customer,
                f"MoneyKit did not find the link (404); nothing changed: {exc}",
                reason,
            )
            raise LinkUnavailable(link_id) from exc
        result = self._ingest(
            live,
            source="relink",
            fetcher=self._fetcher(),
            fetched_at=fetched_at,
            customer_id=stored_customer,
        )
        customer_id = result.customer_id
        health = link_health(live.state, live.error_code)
        if health is not Health.NEEDS_RELINK:
            self._refuse_relink(
                actor,
                link_id,
                customer_id,
                f"link is {health.value} ({live.state}/{live.error_code or '-'})",
                reason,
            )
            raise RelinkNotNeeded(link_id, health.value, live.state, live.error_code)

        session_id = uuid.uuid4().hex
        try:
            self._take_lease(link_id, holder, session_id)
        except LeaseHeld as held:
            self._refuse_relink(
                actor, link_id, customer_id, f"{held.holder} is relinking it", reason
            )
            raise
        # MoneyKit replaces a relinked link's webhook and tags with what this request carries
        # (removing them if absent), so the link's current ones are sent again.
        tags = list(live.all_tags)
        if customer_id and self._customer_tag(customer_id) not in tags:
            tags.append(self._customer_tag(customer_id))
        webhook = self._settings.webhook_url or live.webhook
        customer_user_id = customer_id if customer_id and len(customer_id) >= 4 else link_id
        return self._open_session(
            session_id=session_id,
            mode="relink",
            customer_id=customer_id,
            link_id=link_id,
            actor=actor,
            reason=reason,
            create=lambda: self._client.create_link_session(
                customer_user_id=customer_user_id[:150],
                redirect_uri=self._settings.redirect_uri,
                existing_link_id=link_id,
                webhook=webhook,
                link_tags=tags,
            ),
        )

    # -- the reservation: resume, release, take over, abandon ---------------------------------

    def _close_unfinished(self, session: Session, session_id: str, *, message: str) -> bool:
        return repo.close_unfinished(
            session, session_id, now=self._clock(), message=message[:MAX_TEXT]
        )

    def abandon_session(self, session_id: str, *, actor: Actor | str) -> None:
        """The person who opened Connect gives it up: the session ends (outcome 'exit') and a
        relink's reservation is released at once instead of after its 15 minutes. Idempotent."""
        actor = self._actor(actor)
        with self._store.write() as session:
            row = session.get(ConnectSession, session_id)
            if row is None:
                raise UnknownSession(session_id)
            require(actor, Permission.RELINK if row.mode == "relink" else Permission.START_LINK)
            if row.started_by != actor.name and not actor.can(Permission.RELINK_TAKE_OVER):
                raise LeaseNotHeld(row.link_id or "-", f"{row.started_by} opened this session.")
            closed = self._close_unfinished(
                session, session_id, message=f"Abandoned by {actor.name} before finishing."
            )
            if row.mode == "relink" and row.link_id:
                repo.release_lease(session, row.link_id, session_id)
            if closed:
                self._audit.add(
                    session,
                    actor=actor,
                    action="connect.abandon",
                    outcome="abandoned",
                    link_id=row.link_id,
                    customer_id=row.customer_id,
                    detail=f"session {session_id}",
                )

    def release_relink(
        self, link_id: str, *, actor: Actor | str, reason: str | None = None
    ) -> None:
        """The holder gives up their reservation of ``link_id`` (its open session ends), so
        anyone may relink it now. Decided by one conditional DELETE on the lease's session."""
        actor = self._actor(actor)
        require(actor, Permission.RELINK)
        with self._store.write() as session:
            lease = repo.current_lease(session, link_id, self._clock())
            if lease is None or lease.holder != actor.name[:200]:
                raise LeaseNotHeld(link_id, "you hold no reservation of it (any more).")
            held_session = lease.session_id
            if not repo.release_lease(session, link_id, held_session):
                raise LeaseNotHeld(link_id, "the reservation changed meanwhile.")
            self._close_unfinished(
                session, held_session, message=f"Released by {actor.name} before finishing."
            )
            self._audit.add(
                session,
                actor=actor,
                action="connect.relink_release",
                outcome="released",
                link_id=link_id,
                detail=f"session {held_session}",
                reason=reason,
            )

    def take_over_relink(
        self, link_id: str, *, actor: Actor | str, reason: str, seen_session: str | None = None
    ) -> str:
        """An admin takes someone else's reservation of ``link_id`` (the reason is required and
        audited) and returns the previous holder; then :meth:`start_relink` opens Connect for
        the admin. ``seen_session`` is the reservation the admin was shown (its session id):
        when it has changed meanwhile (released, resumed, taken over by another admin) the take
        over is refused rather than taking a reservation nobody looked at. Of several admins
        taking over at once exactly one wins: the lease moves by one conditional UPDATE on the
        session it held, decided by the database.
        """
        actor = self._actor(actor)
        require(actor, Permission.RELINK_TAKE_OVER)
        reason = " ".join((reason or "").split())
        if not reason:
            raise ReasonRequired("Say why you take over this relink; the reason is audited.")
        now = self._clock()
        with self._store.write() as session:
            lease = repo.current_lease(session, link_id, now)
            if lease is None:
                raise LeaseNotHeld(link_id, "nobody is relinking it now; start a relink instead.")
            if lease.holder == actor.name[:200]:
                raise LeaseNotHeld(link_id, "you hold it yourself; use Resume or Release.")
            previous_holder, previous_session = lease.holder, lease.session_id
            if seen_session is not None and seen_session != previous_session:
                raise LeaseNotHeld(link_id, "the reservation changed meanwhile; look again.")
            moved = repo.move_lease(
                session,
                link_id,
                previous_session,
                {
                    "holder": actor.name[:200],
                    "session_id": f"takeover-{uuid.uuid4().hex[:20]}",
                    "acquired_at": now,
                    "expires_at": now + self._lease_ttl,
                },
            )
            if not moved:
                raise LeaseNotHeld(link_id, "someone else changed the reservation first.")
            self._close_unfinished(
                session, previous_session, message=f"Taken over by {actor.name}: {reason}"
            )
            self._audit.add(
                session,
                actor=actor,
                action="connect.relink_take_over",
                outcome="success",
                link_id=link_id,
                detail=f"from {previous_holder} (session {previous_session})",
                reason=reason,
            )
        return previous_holder

    def resume_relink(
        self, link_id: str, *, actor: Actor | str, reason: str | None = None
    ) -> StartedSession:
        """The holder opens Connect again for their reservation (after a reload, a closed tab
        or an abandoned overlay): a new session under the same lease; the old one ends."""
        actor = self._actor(actor)
        require(actor, Permission.RELINK)
        with self._store.read() as session:
            lease = repo.current_lease(session, link_id, self._clock())
            if lease is None or lease.holder != actor.name[:200]:
                raise LeaseNotHeld(link_id, "your reservation has ended; start a relink instead.")
            previous = lease.session_id
        try:
            started = self.start_relink(link_id=link_id, actor=actor, reason=reason)
        except RelinkNotNeeded:
            # Repaired meanwhile (by the customer, or MoneyKit): nothing left to reserve.
            with self._store.write() as session:
                repo.release_lease(session, link_id, previous)
                self._close_unfinished(session, previous, message="The link no longer needs it.")
            raise
        with self._store.write() as session:
            self._close_unfinished(
                session, previous, message=f"Resumed by {actor.name} in a new Connect session."
            )
            self._audit.add(
                session,
                actor=actor,
                action="connect.relink_resume",
                outcome="started",
                link_id=link_id,
                detail=f"session {started.session_id} replaces {previous}",
                reason=reason,
            )
        return started
