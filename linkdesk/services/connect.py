"""Connect sessions: start a link or relink, then apply the component's event log.

Applying is idempotent. Events are stored once per ``(session_id, seq)`` (a unique constraint, so
two threads cannot both insert one), and the session's end is claimed by one conditional UPDATE on
the session row: only the caller that flips ``completion_claimed_at`` from NULL exchanges the token
or completes the relink. A rerun, a double click or a second thread gets the recorded outcome.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from linkdesk.auth import Actor, Permission, as_actor, require
from linkdesk.connect_log import LogEntry, new_entries, terminal_entry
from linkdesk.health import Health, link_health
from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.errors import (
    GoneError,
    MoneyKitError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from linkdesk.moneykit.models import Link as ApiLink
from linkdesk.moneykit.models import LinkSession
from linkdesk.services.audit import AuditLog
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
from linkdesk.services.ingest import IngestResult, LinkIngestor
from linkdesk.services.institutions import InstitutionFetcher
from linkdesk.settings import Settings
from linkdesk.store.engine import Store
from linkdesk.store.models import ConnectEvent, ConnectSession, Institution, Link, RelinkLease
from linkdesk.store.queries import LinkQueries, SessionRow, session_row
from linkdesk.store.repository import mark_link_deleted

logger = logging.getLogger("linkdesk.connect")

__all__ = [
    "ApplyOutcome",
    "ConnectService",
    "Outcome",
    "StartedSession",
    "exit_message",
]

Outcome = Literal["pending", "success", "exit", "failed"]

DEFAULT_LEASE_TTL = timedelta(minutes=15)
# Products a relink asks MoneyKit to refresh at once (the ones staff look at first); others wait
# for their normal schedule, since refreshes are limited per link and per day.
REFRESH_AFTER_RELINK = ("accounts", "transactions")
# How long institutions read by this service are reused (as the sync worker does).
FETCHER_LIFETIME = timedelta(hours=1)
# A completion (exchange + reads) takes seconds; one claimed this long ago was interrupted.
STALE_COMPLETION = timedelta(minutes=5)
# How long an apply waits for another caller (the other window of an OAuth flow) to finish the
# session it claimed: an exchange and the reads after it take seconds.
FINISHER_WAIT_S = 15.0
FINISHER_POLL_S = 0.2
SOURCE_TAG = "source:linkdesk"
_CUSTOMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+\-]{3,149}")
_REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"token|secret|password|passcode|otp", re.IGNORECASE)
_MAX_PAYLOAD_CHARS = 32_000
_MAX_TEXT = 500

_EXIT_HINTS = {
    "invalid_credentials": "The bank did not accept the username or password.",
    "user_input_incorrect": "An answer or code entered in Connect was not accepted.",
    "user_oauth_denied": "Access was refused on the bank's page.",
    "user_setup_required": "The customer must fix something with their bank first.",
    "institution_error": "The bank is not available right now; try again later.",
    "provider_error": "The data provider failed; try again later.",
    "system_error": "MoneyKit had an internal error; try again later.",
}


@dataclass(frozen=True, slots=True)
class StartedSession:
    session_id: str
    link_session_token: str = field(repr=False)
    mode: Literal["link", "relink"]
    link_id: str | None = None


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    new: int
    outcome: Outcome
    link_id: str | None
    message: str | None
    gaps: tuple[int, ...] = ()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _text(value: Any, limit: int = _MAX_TEXT) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = " ".join(value.split())
    return cleaned[:limit] if cleaned else None


def exit_message(error: Mapping[str, Any] | None) -> str:
    """What to tell staff when Connect ended without linking, from Connect's exit error."""
    if not error:
        return "You closed Connect before finishing."
    error_id = _text(error.get("error_id"), 100)
    shown = _text(error.get("displayed_message"))
    request_id = _text(error.get("request_id"), 200)
    sentence = shown or _EXIT_HINTS.get(error_id or "", "Connect ended with an error.")
    if not sentence.endswith((".", "!", "?")):
        sentence += "."
    details = [
        part for part in (error_id, f"request id {request_id}" if request_id else None) if part
    ]
    return f"{sentence} ({', '.join(details)})" if details else sentence


def _redact(value: Any, depth: int = 0) -> Any:
    """Copy of an event payload with anything that looks like a credential removed."""
    if depth > 8:
        return None
    if isinstance(value, Mapping):
        return {
            str(k): (_REDACTED if _SECRET_KEY.search(str(k)) else _redact(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value[:200]]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _payload(entry: LogEntry) -> dict[str, Any]:
    cleaned = _redact(entry.data)
    encoded = json.dumps(cleaned, default=str)
    if len(encoded) > _MAX_PAYLOAD_CHARS:
        return {"truncated": True, "size": len(encoded)}
    return cleaned if isinstance(cleaned, dict) else {}


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConnectService:
    def __init__(
        self,
        *,
        store: Store,
        client: MoneyKitClient,
        settings: Settings,
        audit: AuditLog,
        clock: Callable[[], datetime] | None = None,
        lease_ttl: timedelta | None = None,
        links: LinkQueries | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._store = store
        self._sleep = sleep or time.sleep
        self._client = client
        self._settings = settings
        self._audit = audit
        self._clock = clock or _utcnow
        self._lease_ttl = lease_ttl or timedelta(minutes=settings.relink_lease_minutes)
        # The read side whose shared totals the pages show: a link this service changes is
        # moved between its counts at once (see _ingest).
        self._queries = links or LinkQueries(store)
        self._fetcher_lock = threading.Lock()
        self._fetcher_cache: InstitutionFetcher | None = None
        self._fetcher_since = self._clock()
        # Told (mode, outcome) when a Connect session starts ("started") or ends; metrics listen.
        self.session_observers: list[Callable[[str, str], None]] = []
        self._ingestor = LinkIngestor(
            store=store,
            client=client,
            customer_tag_prefix=settings.customer_tag_prefix,
            clock=self._clock,
        )
        # After Done the agent waits for these reads: a rate-limited account read is skipped
        # (the sync worker reads the accounts soon after) instead of sleeping out Retry-After.
        self._completion_ingestor = LinkIngestor(
            store=store,
            client=client.with_options(max_retries=0),
            customer_tag_prefix=settings.customer_tag_prefix,
            clock=self._clock,
        )

    def _fetcher(self) -> InstitutionFetcher:
        """Institutions as read within the last hour: the completion of a relink finds the one
        its start has just read instead of asking MoneyKit again (they rarely change; the sync
        worker re-reads them hourly the same way)."""
        now = self._clock()
        with self._fetcher_lock:
            if self._fetcher_cache is None or now - self._fetcher_since > FETCHER_LIFETIME:
                self._fetcher_cache = InstitutionFetcher(self._client)
                self._fetcher_since = now
            return self._fetcher_cache

    def _ingest(self, link: ApiLink, *, completing: bool = False, **kwargs: Any) -> IngestResult:
        """Store what MoneyKit says of ``link`` and move it between the shared totals' counts,
        so that the numbers a staff action changed are right on the page's next run.
        ``completing``: while the agent waits after Done (see _completion_ingestor)."""
        before = self._queries.summary_group(link.link_id)
        ingestor = self._completion_ingestor if completing else self._ingestor
        result = ingestor.ingest(link, **kwargs)
        self._queries.count_moved(before, self._queries.summary_group(link.link_id))
        return result

    # -- starting ----------------------------------------------------------------------------

    def _customer_tag(self, customer_id: str) -> str:
        return f"{self._settings.customer_tag_prefix}{customer_id}"

    def _actor(self, actor: Actor | str) -> Actor:
        return as_actor(actor, self._settings.default_role)

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
            session.add(
                ConnectSession(
                    id=session_id,
                    mode=mode,
                    customer_id=customer_id,
                    link_id=link_id,
                    started_by=actor_name,
                    started_at=now,
                    outcome="failed" if error else "pending",
                    failure_message=error.user_message if error else None,
                    finished_at=now if error else None,
                    token_sha256=_token_hash(token) if token else None,
                )
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
                self._release_lease(session, link_id, session_id)
        self._tell_observers(mode, "failed" if error else "started")

    def _tell_observers(self, mode: str, outcome: str) -> None:
        for observer in self.session_observers:
            try:
                observer(mode, outcome)
            except Exception:
                logger.exception("connect session observer failed")

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
        try:
            created = create()
        except MoneyKitError as exc:
            self._record_start(
                session_id=session_id,
                mode=mode,
                customer_id=customer_id,
                link_id=link_id,
                actor=actor,
                token=None,
                error=exc,
                reason=reason,
            )
            raise
        self._record_start(
            session_id=session_id,
            mode=mode,
            customer_id=customer_id,
            link_id=link_id,
            actor=actor,
            token=created.link_session_token,
            error=None,
            reason=reason,
        )
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
        """Reserve ``link_id`` for ``holder``, atomically in the database.

        Two statements, each decided by the database rather than by a read beforehand: an
        INSERT that only succeeds when nobody holds the link, then an UPDATE that only succeeds
        when the existing lease has expired or is the holder's own. Two processes racing for
        the same link cannot both win.
        """
        now = self._clock()
        values = {
            "link_id": link_id,
            "holder": holder[:200],
            "session_id": session_id,
            "acquired_at": now,
            "expires_at": now + self._lease_ttl,
        }
        with self._store.write() as session:
            if self._insert_lease(session, values):
                return
            won = session.execute(
                sa.update(RelinkLease)
                .where(
                    RelinkLease.link_id == link_id,
                    sa.or_(RelinkLease.expires_at <= now, RelinkLease.holder == values["holder"]),
                )
                .values(**{k: v for k, v in values.items() if k != "link_id"})
            )
            if won.rowcount == 1:  # type: ignore[attr-defined]
                return
            lease = session.get(RelinkLease, link_id)
            if lease is None:  # pragma: no cover - released between the two statements
                raise LeaseHeld(link_id, "someone else", now + self._lease_ttl)
            raise LeaseHeld(link_id, lease.holder, lease.expires_at)

    @staticmethod
    def _insert_lease(session: Session, values: dict[str, Any]) -> bool:
        dialect = session.get_bind().dialect.name
        if dialect in ("sqlite", "postgresql"):
            insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
            stmt = (
                insert(RelinkLease)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["link_id"])
            )
            return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]
        try:
            with session.begin_nested():
                session.add(RelinkLease(**values))
            return True
        except sa.exc.IntegrityError:
            return False

    @staticmethod
    def _release_lease(session: Session, link_id: str, session_id: str) -> None:
        session.execute(
            sa.delete(RelinkLease).where(
                RelinkLease.link_id == link_id, RelinkLease.session_id == session_id
            )
        )

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
            self._audit.record(
                actor=actor,
                action="connect.start_relink",
                outcome="refused",
                link_id=link_id,
                customer_id=stored_customer,
                detail=f"MoneyKit did not find the link (404); nothing changed: {exc}",
                reason=reason,
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
        """End a session nobody is finishing as 'exit' with ``message`` (in the caller's
        transaction). A session whose end is already claimed is left to its finisher."""
        closed = session.execute(
            sa.update(ConnectSession)
            .where(
                ConnectSession.id == session_id,
                ConnectSession.outcome == "pending",
                ConnectSession.completion_claimed_at.is_(None),
            )
            .values(outcome="exit", finished_at=self._clock(), exit_message=message[:_MAX_TEXT])
        )
        return bool(closed.rowcount)  # type: ignore[attr-defined]

    def _current_lease(self, session: Session, link_id: str) -> RelinkLease | None:
        lease = session.get(RelinkLease, link_id)
        return lease if lease is not None and lease.expires_at > self._clock() else None

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
                self._release_lease(session, row.link_id, session_id)
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
            lease = self._current_lease(session, link_id)
            if lease is None or lease.holder != actor.name[:200]:
                raise LeaseNotHeld(link_id, "you hold no reservation of it (any more).")
            held_session = lease.session_id
            gone = session.execute(
                sa.delete(RelinkLease).where(
                    RelinkLease.link_id == link_id, RelinkLease.session_id == held_session
                )
            )
            if not gone.rowcount:  # type: ignore[attr-defined]
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
            lease = self._current_lease(session, link_id)
            if lease is None:
                raise LeaseNotHeld(link_id, "nobody is relinking it now; start a relink instead.")
            if lease.holder == actor.name[:200]:
                raise LeaseNotHeld(link_id, "you hold it yourself; use Resume or Release.")
            previous_holder, previous_session = lease.holder, lease.session_id
            if seen_session is not None and seen_session != previous_session:
                raise LeaseNotHeld(link_id, "the reservation changed meanwhile; look again.")
            won = session.execute(
                sa.update(RelinkLease)
                .where(RelinkLease.link_id == link_id, RelinkLease.session_id == previous_session)
                .values(
                    holder=actor.name[:200],
                    session_id=f"takeover-{uuid.uuid4().hex[:20]}",
                    acquired_at=now,
                    expires_at=now + self._lease_ttl,
                )
            )
            if not won.rowcount:  # type: ignore[attr-defined]
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
            lease = self._current_lease(session, link_id)
            if lease is None or lease.holder != actor.name[:200]:
                raise LeaseNotHeld(link_id, "your reservation has ended; start a relink instead.")
            previous = lease.session_id
        try:
            started = self.start_relink(link_id=link_id, actor=actor, reason=reason)
        except RelinkNotNeeded:
            # Repaired meanwhile (by the customer, or MoneyKit): nothing left to reserve.
            with self._store.write() as session:
                self._release_lease(session, link_id, previous)
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

    # -- reading -----------------------------------------------------------------------------

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

    # -- applying the log --------------------------------------------------------------------

    def _insert_event(self, session: Session, session_id: str, entry: LogEntry) -> int:
        values = {
            "session_id": session_id,
            "seq": entry.seq,
            "type": entry.type,
            "name": (entry.event_name or entry.type)[:100],
            "payload": _payload(entry),
            "at": entry.at,
            "recorded_at": self._clock(),
        }
        dialect = session.get_bind().dialect.name
        if dialect in ("sqlite", "postgresql"):
            insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
            stmt = (
                insert(ConnectEvent)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["session_id", "seq"])
            )
            return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]
        # Other databases: the unique constraint still guarantees one row; a savepoint keeps the
        # surrounding transaction usable when the row exists already.
        try:
            with session.begin_nested():
                session.add(ConnectEvent(**values))
            return 1
        except sa.exc.IntegrityError:
            return 0

    def _persist(self, session_id: str, entries: list[object]) -> tuple[int, tuple[int, ...]]:
        with self._store.write() as session:
            if session.get(ConnectSession, session_id) is None:
                raise UnknownSession(session_id)
            applied = set(
                session.scalars(
                    sa.select(ConnectEvent.seq).where(ConnectEvent.session_id == session_id)
                ).all()
            )
            fresh = new_entries(entries, applied, session_id=session_id)
            inserted = sum(self._insert_event(session, session_id, e) for e in fresh)
        return inserted, fresh.gaps

    def apply_log(
        self, session_id: str, entries: Iterable[object] | None, *, actor: Actor | str
    ) -> ApplyOutcome:
        """Store new log entries and, once per session, act on its end (exchange, relink, exit).

        ``entries`` is the component's cumulative log as received; malformed entries and
        entries of other sessions are ignored. Finishing a session needs the permission that
        starting it needed (``link.start`` or ``link.relink``).
        """
        actor = self._actor(actor)
        with self._store.read() as session:
            row = session.get(ConnectSession, session_id)
            if row is None:
                raise UnknownSession(session_id)
            mode = row.mode
        require(actor, Permission.RELINK if mode == "relink" else Permission.START_LINK)
        return self.apply_log_as(session_id, entries, actor=actor)

    def apply_log_as(
        self, session_id: str, entries: Iterable[object] | None, *, actor: Actor | str
    ) -> ApplyOutcome:
        """:meth:`apply_log` without the role check (the customer-link flow authorised it)."""
        entries = list(entries or [])
        new, gaps = self._persist(session_id, entries)
        self._fail_if_interrupted(session_id, actor)
        # The end is looked for in the whole log, not only in new entries: a ``continue`` log
        # starts numbering again, and its success must still be acted on once.
        everything = new_entries(entries, (), session_id=session_id)
        final = terminal_entry(everything)
        if final is not None:
            if final.type == "exit":
                self._finish_exit(session_id, final, actor)
            elif final.type == "success":
                self._finish_success(session_id, final, actor)
            else:
                self._finish_relink(session_id, final, actor)
            self._await_other_finisher(session_id)
        return self._outcome(session_id, new, gaps)

    def _await_other_finisher(self, session_id: str) -> None:
        """Wait while another caller finishes this session, so both report its outcome.

        An OAuth bank that cuts the popup's opener makes Connect end in two windows with the same
        token: the first to claim the session exchanges it, and the second must then show the
        same success, not "still open". Bounded: an interrupted finisher is closed by
        :meth:`_fail_if_interrupted` on a later apply.
        """
        for _ in range(int(FINISHER_WAIT_S / FINISHER_POLL_S)):
            with self._store.read() as session:
                row = session.get(ConnectSession, session_id)
                if row is None or row.outcome != "pending" or row.completion_claimed_at is None:
                    return
            self._sleep(FINISHER_POLL_S)

    def _fail_if_interrupted(self, session_id: str, actor: Actor | str) -> None:
        """Close a session whose finisher stopped half-way (process killed during the exchange).

        Without this the session would say "finishing" forever; the link itself, if MoneyKit
        made it, is picked up by the next sync.
        """
        now = self._clock()
        with self._store.write() as session:
            stopped = session.execute(
                sa.update(ConnectSession)
                .where(
                    ConnectSession.id == session_id,
                    ConnectSession.outcome == "pending",
                    ConnectSession.completion_claimed_at < now - STALE_COMPLETION,
                )
                .values(
                    outcome="failed",
                    finished_at=now,
                    failure_message=(
                        "Linkdesk stopped while finishing this session; the next sync will "
                        "show the link if MoneyKit created it."
                    ),
                )
            )
            if stopped.rowcount:  # type: ignore[attr-defined]
                row = session.get(ConnectSession, session_id)
                self._audit.add(
                    session,
                    actor=actor,
                    action="connect.interrupted",
                    outcome="failed",
                    link_id=row.link_id if row else None,
                    customer_id=row.customer_id if row else None,
                    detail="completion claimed but never finished",
                )

    @staticmethod
    def _institution_name(session: Session, link_id: str | None) -> str | None:
        if link_id is None:
            return None
        return session.scalar(
            sa.select(Institution.name)
            .join(Link, Link.institution_id == Institution.institution_id)
            .where(Link.link_id == link_id)
        )

    def _outcome(self, session_id: str, new: int, gaps: tuple[int, ...]) -> ApplyOutcome:
        with self._store.read() as session:
            row = session.get(ConnectSession, session_id)
            if row is None:
                raise UnknownSession(session_id)
            outcome: Outcome = row.outcome  # type: ignore[assignment]
            message: str | None
            if outcome == "success":
                bank = self._institution_name(session, row.link_id) or "The bank"
                message = (
                    f"{bank} is connected again (link {row.link_id})."
                    if row.mode == "relink"
                    else f"{bank} linked for customer {row.customer_id} (link {row.link_id})."
                )
            elif outcome == "exit":
                message = row.exit_message
            elif outcome == "failed":
                message = row.failure_message
            elif row.completion_claimed_at is not None:
                message = "Finishing the link…"
            else:
                message = None
            return ApplyOutcome(
                new=new, outcome=outcome, link_id=row.link_id, message=message, gaps=gaps
            )

    def _claim(self, session_id: str) -> ConnectSession | None:
        """Win the right to finish the session; None if someone else already has."""
        now = self._clock()
        with self._store.write() as session:
            won = session.execute(
                sa.update(ConnectSession)
                .where(
                    ConnectSession.id == session_id,
                    ConnectSession.outcome == "pending",
                    ConnectSession.completion_claimed_at.is_(None),
                )
                .values(completion_claimed_at=now)
            )
            if not won.rowcount:  # type: ignore[attr-defined]
                return None
            row = session.get(ConnectSession, session_id)
            return row

    def _finish(
        self,
        session_id: str,
        *,
        actor: Actor | str,
        action: str,
        outcome: Outcome,
        audit_outcome: str,
        detail: str | None,
        link_id: str | None = None,
        exchanged: bool = False,
        failure_message: str | None = None,
        exit_fields: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        now = self._clock()
        with self._store.write() as session:
            row = session.get(ConnectSession, session_id)
            if row is None:
                raise UnknownSession(session_id)
            row.outcome = outcome
            row.finished_at = now
            if link_id is not None:
                row.link_id = link_id
            if exchanged:
                row.exchanged_at = now
            if failure_message is not None:
                row.failure_message = failure_message
            if exit_fields is not None:
                row.exit_error_id, row.exit_message, row.exit_request_id = exit_fields
            self._audit.add(
                session,
                actor=actor,
                action=action,
                outcome=audit_outcome,
                link_id=row.link_id,
                customer_id=row.customer_id,
                detail=detail,
            )
            if row.mode == "relink" and row.link_id:
                self._release_lease(session, row.link_id, session_id)
            mode = row.mode
        self._tell_observers(mode, outcome)

    def _finish_exit(self, session_id: str, entry: LogEntry, actor: Actor | str) -> None:
        if self._claim(session_id) is None:
            return
        error = entry.data.get("error")
        error = error if isinstance(error, Mapping) else None
        message = exit_message(error)
        fields = (
            (
                _text(error.get("error_id"), 100),
                _text(error.get("displayed_message")),
                _text(error.get("request_id"), 200),
            )
            if error
            else (None, None, None)
        )
        exit_fields = (fields[0], message, fields[2])
        self._finish(
            session_id,
            actor=actor,
            action="connect.exit",
            outcome="exit",
            audit_outcome=fields[0] or "closed",
            detail=message,
            exit_fields=exit_fields,
        )

    def _finish_success(self, session_id: str, entry: LogEntry, actor: Actor | str) -> None:
        claimed = self._claim(session_id)
        if claimed is None:
            return
        customer_id = claimed.customer_id
        token = entry.data.get("exchangeable_token")
        if not isinstance(token, str) or not token:
            self._finish(
                session_id,
                actor=actor,
                action="connect.exchange",
                outcome="failed",
                audit_outcome="failed",
                detail="success without an exchangeable token",
                failure_message="Connect reported success without a token; start again.",
            )
            return
        fetched_at = self._clock()
        try:
            exchanged = self._client.exchange_token(token)
        except MoneyKitError as exc:
            # Not retried: whether MoneyKit consumed the token is unknown, and a second exchange
            # of a consumed token fails anyway. The link, if made, is found by the next sync.
            self._finish(
                session_id,
                actor=actor,
                action="connect.exchange",
                outcome="failed",
                audit_outcome="failed",
                detail=str(exc),
                failure_message=f"The link could not be completed: {exc.user_message}",
            )
            return
        link = exchanged.link
        detail = f"exchanged; state {link.state}"
        try:
            result = self._ingest(
                link,
                source="connect",
                fetcher=self._fetcher(),
                fetched_at=fetched_at,
                customer_id=customer_id,
            )
            if result.accounts_error is not None:
                detail += f"; accounts not read: {result.accounts_error}"
        except MoneyKitError as exc:
            detail += f"; details not stored: {exc}"
        self._finish(
            session_id,
            actor=actor,
            action="connect.exchange",
            outcome="success",
            audit_outcome="success",
            detail=detail,
            link_id=link.link_id,
            exchanged=True,
        )

    def _refresh_after_relink(self, link_id: str) -> str:
        """Ask MoneyKit to fetch fresh data now; a refusal is noted, never fatal.

        429 (refresh limits or the bank's refresh window), 422 (link not ready yet) and 403
        (product not on the link) are expected answers here.
        """
        try:
            self._client.refresh_products(link_id, REFRESH_AFTER_RELINK)
        except RateLimitError:
            return "refresh not possible now (rate limited)"
        except (UnprocessableEntityError, PermissionDeniedError) as exc:
            return f"refresh refused ({exc.error_code or exc.status_code})"
        except MoneyKitError as exc:
            return f"refresh failed: {exc}"
        return "refresh requested"

    def _finish_relink(self, session_id: str, entry: LogEntry, actor: Actor | str) -> None:
        claimed = self._claim(session_id)
        if claimed is None:
            return
        reported = entry.data.get("link_id")
        link_id = claimed.link_id or (reported if isinstance(reported, str) and reported else None)
        detail = "relink completed in Connect"
        still_needs_relink: str | None = None
        if link_id:
            # The refresh only asks MoneyKit to fetch data later, so it does not have to come
            # before the read: both go out at once, and the agent waits for one round trip
            # fewer between Done and the confirmation.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="relink-refresh") as pool:
                refresh = pool.submit(self._refresh_after_relink, link_id)
                fetched_at = self._clock()
                try:
                    # Verify instead of trusting Connect: the state MoneyKit reports now is stored.
                    link = self._client.get_link(link_id)
                    self._ingest(
                        link,
                        completing=True,
                        source="relink",
                        fetcher=self._fetcher(),
                        fetched_at=fetched_at,
                        customer_id=claimed.customer_id,
                    )
                    read = f"; state now {link.state}"
                    if link.error_code:
                        read += f"/{link.error_code}"
                    if link_health(link.state, link.error_code) is Health.NEEDS_RELINK:
                        # Connect's word is not enough (a hostile browser can post a
                        # relink.complete): success is what MoneyKit confirms.
                        still_needs_relink = read.removeprefix("; state now ")
                except MoneyKitError as exc:
                    read = f"; state not re-read: {exc}"
                detail += "; " + refresh.result() + read
        if still_needs_relink is not None:
            self._finish(
                session_id,
                actor=actor,
                action="connect.relink",
                outcome="failed",
                audit_outcome="unconfirmed",
                detail=detail,
                link_id=link_id,
                failure_message=(
                    "Connect reported the relink as finished, but MoneyKit still reports "
                    f"{still_needs_relink}: the link still needs a relink."
                ),
            )
            return
        self._finish(
            session_id,
            actor=actor,
            action="connect.relink",
            outcome="success",
            audit_outcome="success",
            detail=detail,
            link_id=link_id,
        )
