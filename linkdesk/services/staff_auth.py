"""Staff sign-in that holds across browsers, tabs and replicas: accounts, throttling, sessions.

Everything lives in the database, so every replica sees the same state:

* **Accounts** added with ``python -m linkdesk user add`` (argon2id hashes in ``staff_users``);
  accounts from ``LINKDESK_USERS`` or the secrets file are passed in by the caller.
* **Throttling**: each wrong password is a row in ``sign_in_failures``; a user name or a client
  address with too many failures in the window is refused, before the password is even checked,
  until the oldest of those failures leaves the window. Opening a new browser session does not
  help, and neither does another replica.
* **Sessions**: a successful sign-in makes a ``staff_sessions`` row. The browser gets its cookie
  token through a one-time handoff code (the Streamlit script cannot set cookies; a route of
  ``server.py`` exchanges the code and sets an HttpOnly cookie). Only SHA-256 hashes of the code
  and the token are stored. Sign-out and admins revoke rows; every tab checks its row on each run.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update

from linkdesk.auth import Actor, Permission, Role, hash_password, password_matches, require
from linkdesk.services.audit import AuditLog
from linkdesk.settings import Settings
from linkdesk.store.engine import Store
from linkdesk.store.models import SignInFailure, StaffSession, StaffUser

__all__ = [
    "HANDOFF_SECONDS",
    "SESSION_COOKIE",
    "SignInResult",
    "StaffAuth",
    "StaffSessionRow",
    "client_address",
]

SESSION_COOKIE = "linkdesk_session"
HANDOFF_SECONDS = 60  # a handoff code is used by the very next page load
_MAX_NAME = 100


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def client_address(
    connection_ip: str | None, headers: Mapping[str, str] | None, *, trust_forwarded_for: bool
) -> str:
    """The address sign-ins are throttled by.

    ``X-Forwarded-For`` is anyone's to write, so it counts only when a proxy that sets it is
    configured (``LINKDESK_TRUST_FORWARDED_FOR``); then its first entry is the client.
    """
    if trust_forwarded_for and headers:
        forwarded = next((v for k, v in headers.items() if k.lower() == "x-forwarded-for"), "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:_MAX_NAME]
    return (connection_ip or "local")[:_MAX_NAME]


@dataclass(frozen=True, slots=True)
class SignInResult:
    actor: Actor | None
    message: str = ""
    retry_at: datetime | None = None
    session_id: str | None = None
    handoff_code: str | None = None  # exchanged once for the cookie by server.py's route

    @property
    def ok(self) -> bool:
        return self.actor is not None


@dataclass(frozen=True, slots=True)
class StaffSessionRow:
    id: str
    name: str
    role: str
    client: str | None
    created_at: datetime
    expires_at: datetime


class StaffAuth:
    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._store = store
        self._audit = audit
        self._settings = settings
        self._clock = clock or _utcnow

    # Accounts -----------------------------------------------------------------------------

    def add_user(self, name: str, role: Role | str, password: str) -> str:
        """Create or replace a local account; returns the argon2id hash that was stored."""
        name = name.strip()
        if not name or len(name) > _MAX_NAME:
            raise ValueError(f"a user name needs 1 to {_MAX_NAME} characters")
        role = Role(role)
        hashed = hash_password(password)
        now = self._clock()
        with self._store.write() as session:
            row = session.get(StaffUser, name)
            if row is None:
                session.add(
                    StaffUser(
                        name=name,
                        role=role.value,
                        password_hash=hashed,
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                row.role, row.password_hash, row.updated_at = role.value, hashed, now
            self._audit.add(
                session,
                actor=f"cli:{self._settings.staff_user}",
                action="staff.user_set",
                outcome="saved",
                detail=f"{name} ({role.value})",
            )
        return hashed

    def stored_users(self) -> dict[str, dict[str, str]]:
        with self._store.read() as session:
            rows = session.execute(select(StaffUser.name, StaffUser.role, StaffUser.password_hash))
            return {n: {"role": r, "password_hash": h} for n, r, h in rows}

    # Sign-in ------------------------------------------------------------------------------

    def sign_in(
        self,
        username: str,
        password: str,
        *,
        client: str,
        configured_users: Mapping[str, Mapping[str, str]] | None = None,
    ) -> SignInResult:
        """Check a password unless the name or client is throttled; audit the outcome.

        Accounts in the store win over configured ones of the same name.
        """
        username = username.strip()[:_MAX_NAME]
        client = client[:_MAX_NAME]
        now = self._clock()
        retry_at = self._throttled_until(username, client, now)
        if retry_at is not None:
            self._audit.record(
                actor=f"sign-in:{username or '?'}",
                action="staff.sign_in",
                outcome="throttled",
                detail=f"client {client}",
            )
            wait = max(1, int((retry_at - now).total_seconds() // 60) + 1)
            return SignInResult(
                None,
                "Too many failed sign-ins for this user or from this address. Try again at "
                f"{retry_at:%H:%M} UTC (in about {wait} min).",
                retry_at=retry_at,
            )
        users = dict(configured_users or {})
        users.update(self.stored_users())
        entry = users.get(username)
        if not password_matches(entry, username, password) or entry is None:
            window = timedelta(minutes=self._settings.sign_in_window_minutes)
            with self._store.write() as session:
                # Failures older than the window count for nothing: the table stays small.
                session.execute(delete(SignInFailure).where(SignInFailure.at < now - window))
                session.add(SignInFailure(at=now, username=username, client=client))
                self._audit.add(
                    session,
                    actor=f"sign-in:{username or '?'}",
                    action="staff.sign_in",
                    outcome="refused",
                    detail=f"client {client}",
                )
            return SignInResult(None, "Unknown user or wrong password.")
        actor = Actor(username, Role(entry["role"]))
        session_id, code = self._open_session(actor, client, now)
        return SignInResult(actor, session_id=session_id, handoff_code=code)

    def _throttled_until(self, username: str, client: str, now: datetime) -> datetime | None:
        window = timedelta(minutes=self._settings.sign_in_window_minutes)
        since = now - window
        limits = (
            (SignInFailure.username == username, self._settings.sign_in_max_failures_per_account),
            (SignInFailure.client == client, self._settings.sign_in_max_failures_per_client),
        )
        until: datetime | None = None
        with self._store.read() as session:
            for which, limit in limits:
                times = session.scalars(
                    select(SignInFailure.at)
                    .where(which, SignInFailure.at > since)
                    .order_by(SignInFailure.at.desc())
                    .limit(limit)
                ).all()
                if len(times) >= limit:
                    # Free again when the oldest of the last `limit` failures leaves the window.
                    free_at = times[-1] + window
                    until = free_at if until is None else max(until, free_at)
        return until

    def open_session(self, actor: Actor, *, client: str) -> tuple[str, str]:
        """A session for someone signed in another way (OIDC): (session id, handoff code)."""
        return self._open_session(actor, client[:_MAX_NAME], self._clock())

    def _open_session(self, actor: Actor, client: str, now: datetime) -> tuple[str, str]:
        session_id = secrets.token_hex(16)
        code = secrets.token_urlsafe(32)
        with self._store.write() as session:
            # Sessions ended more than a day ago are of no use to anyone (the audit log keeps
            # the sign-ins and sign-outs).
            stale = now - timedelta(days=1)
            session.execute(
                delete(StaffSession).where(
                    (StaffSession.expires_at < stale) | (StaffSession.revoked_at < stale)
                )
            )
            session.add(
                StaffSession(
                    id=session_id,
                    token_sha256=None,
                    handoff_sha256=_sha256(code),
                    handoff_expires_at=now + timedelta(seconds=HANDOFF_SECONDS),
                    name=actor.name[:200],
                    role=actor.role.value,
                    client=client,
                    created_at=now,
                    expires_at=now + timedelta(hours=self._settings.staff_session_hours),
                )
            )
            self._audit.add(
                session,
                actor=actor,
                action="staff.sign_in",
                outcome="ok",
                detail=f"client {client}",
            )
        return session_id, code

    def exchange_handoff(self, code: str) -> tuple[str, datetime] | None:
        """The cookie token for a one-time handoff code (and when it expires), or None.

        A code works once and only for a minute; the token is returned once and only its hash
        is stored.
        """
        if not code or len(code) > 200:
            return None
        now = self._clock()
        token = secrets.token_urlsafe(32)
        with self._store.write() as session:
            row = session.scalars(
                select(StaffSession).where(StaffSession.handoff_sha256 == _sha256(code))
            ).first()
            if row is None:
                return None
            usable = (
                row.revoked_at is None
                and row.handoff_expires_at is not None
                and row.handoff_expires_at > now
                and row.expires_at > now
                and row.token_sha256 is None
            )
            row.handoff_sha256, row.handoff_expires_at = None, None
            if not usable:
                return None
            row.token_sha256 = _sha256(token)
            return token, row.expires_at

    # Who is signed in -----------------------------------------------------------------------

    def actor_for_token(self, token: str | None) -> tuple[Actor, str] | None:
        """(actor, session id) of a live cookie token, or None."""
        if not isinstance(token, str) or not token or len(token) > 200:
            return None
        return self._live(StaffSession.token_sha256 == _sha256(token))

    def actor_for_session(self, session_id: str | None) -> Actor | None:
        if not session_id:
            return None
        found = self._live(StaffSession.id == session_id)
        return found[0] if found else None

    def _live(self, which: object) -> tuple[Actor, str] | None:
        now = self._clock()
        with self._store.read() as session:
            row = session.scalars(select(StaffSession).where(which)).first()  # type: ignore[arg-type]
            if row is None or row.revoked_at is not None or row.expires_at <= now:
                return None
            return Actor(row.name, Role(row.role)), row.id

    # Ending sessions ------------------------------------------------------------------------

    def sign_out(self, *, session_id: str | None = None, token: str | None = None) -> bool:
        """End the browser's session (every tab of it); True when one was live."""
        now = self._clock()
        if token:
            found = self.actor_for_token(token)
            session_id = found[1] if found else session_id
        if not session_id:
            return False
        with self._store.write() as session:
            row = session.get(StaffSession, session_id)
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at, row.revoked_by = now, row.name
            self._audit.add(
                session,
                actor=Actor(row.name, Role(row.role)),
                action="staff.sign_out",
                outcome="ok",
            )
        return True

    def live_sessions(self, actor: Actor) -> list[StaffSessionRow]:
        require(actor, Permission.SETTINGS)
        now = self._clock()
        with self._store.read() as session:
            rows = session.scalars(
                select(StaffSession)
                .where(
                    StaffSession.revoked_at.is_(None),
                    StaffSession.expires_at > now,
                )
                .order_by(StaffSession.created_at.desc())
                .limit(500)
            ).all()
            return [
                StaffSessionRow(r.id, r.name, r.role, r.client, r.created_at, r.expires_at)
                for r in rows
            ]

    def revoke(self, actor: Actor, session_id: str, *, reason: str | None = None) -> bool:
        """An admin ends someone's session; that browser is signed out on its next run."""
        require(actor, Permission.SETTINGS)
        now = self._clock()
        with self._store.write() as session:
            changed = session.execute(
                update(StaffSession)
                .where(StaffSession.id == session_id, StaffSession.revoked_at.is_(None))
                .values(revoked_at=now, revoked_by=actor.name[:200])
            ).rowcount  # type: ignore[attr-defined]
            self._audit.add(
                session,
                actor=actor,
                action="staff.session_revoke",
                outcome="revoked" if changed else "not_found",
                detail=f"session {session_id[:8]}…",
                reason=reason,
            )
        return bool(changed)

    def failures_since(self, since: datetime) -> int:
        with self._store.read() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(SignInFailure).where(SignInFailure.at > since)
                )
                or 0
            )
