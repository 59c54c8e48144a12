"""Relink links for customers: support sends a link, the customer repairs their bank connection.

A token is ``<payload>.<signature>``: the payload (base64url JSON) names the token id, the one
link it may relink and its expiry; the signature is HMAC-SHA256 over it with the installation's
signing key. The store keeps only a SHA-256 of the whole token, so a copy of the database cannot
be turned into working links. A token works once: redeeming it flips ``used_at`` with one
conditional UPDATE, so two clicks on the same link cannot both start a relink.

The signing key is ``LINKDESK_SIGNING_KEY`` when set (at least 32 characters). Otherwise a random
key is created once in ``LINKDESK_SIGNING_KEY_FILE`` (default ``var/signing.key``) with
owner-only permissions; every process of the installation reads the same file. Deleting or
replacing the key invalidates every link already sent.

What the customer sends back is a claim: a relink success from their browser counts only once
MoneyKit confirms it (the link no longer needs a relink); otherwise it is recorded as
``unconfirmed``. What the customer reads never names a staff member or an internal link id.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

from linkdesk.auth import Actor, Permission, as_actor, require
from linkdesk.health import Health, link_health
from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.errors import MoneyKitError
from linkdesk.services.audit import AuditLog
from linkdesk.services.connect import ConnectService, StartedSession
from linkdesk.services.errors import (
    LeaseHeld,
    LinkAlreadyUsed,
    LinkExpired,
    LinkNotFound,
    LinkTampered,
    LiveLinkExists,
    RelinkNotNeeded,
    ServiceError,
)
from linkdesk.settings import Settings
from linkdesk.store.engine import Store
from linkdesk.store.models import CustomerLinkToken, Institution, Link, RelinkLease

__all__ = [
    "CustomerLink",
    "CustomerLinkCheck",
    "CustomerLinkService",
    "CustomerOutcome",
    "NothingToRepair",
    "RepairInProgress",
    "load_signing_key",
]

_DOMAIN = b"linkdesk-relink-v1."  # binds signatures to this use of the key
_MIN_KEY_CHARS = 32


@dataclass(frozen=True, slots=True)
class CustomerLink:
    id: str
    token: str = field(repr=False)
    link_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class CustomerLinkCheck:
    """What the repair page may say when it opens: only the customer's own bank name."""

    institution_name: str | None
    repair: Literal["ready", "in_progress", "not_needed"]


CustomerOutcomeKind = Literal["pending", "success", "unconfirmed", "exit", "failed"]

# What the customer reads for each outcome: no link id, no staff name, no MoneyKit detail.
CUSTOMER_MESSAGES: dict[str, str] = {
    "pending": "Finish in the bank connection window. This page updates by itself.",
    "success": "Your bank is connected again. You can close this page.",
    "unconfirmed": (
        "We could not confirm with your bank that the connection is repaired, so it may still "
        "need your attention. Please contact your support contact; they can send you a new link."
    ),
    "exit": (
        "The bank window was closed before the repair finished. Please ask your support "
        "contact for a new link."
    ),
    "failed": (
        "The repair did not finish. Please ask your support contact for a new link; nothing "
        "about your bank login was changed."
    ),
}


@dataclass(frozen=True, slots=True)
class CustomerOutcome:
    """How the customer's repair ended, in words meant for the customer."""

    outcome: CustomerOutcomeKind
    message: str


class RepairInProgress(LeaseHeld):
    """Someone is repairing the link right now. Says so without naming them or the link."""

    def __init__(self, held: LeaseHeld) -> None:
        super().__init__(held.link_id, held.holder, held.expires_at)
        self.args = (
            "A repair of this bank connection is already in progress. Please try again later "
            "with the same link.",
        )


class NothingToRepair(RelinkNotNeeded):
    """The link works again. Says so without naming the link or its state."""

    def __init__(self, cause: RelinkNotNeeded) -> None:
        super().__init__(cause.link_id, cause.health, cause.state, cause.error_code)
        self.args = ("Your bank connection works again; there is nothing to repair.",)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode())


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load_signing_key(settings: Settings) -> bytes:
    """The installation's signing key (see the module docstring for where it comes from)."""
    if settings.signing_key is not None:
        value = settings.signing_key.get_secret_value()
        if len(value) < _MIN_KEY_CHARS:
            raise ValueError(f"LINKDESK_SIGNING_KEY must have at least {_MIN_KEY_CHARS} characters")
        return value.encode()
    path = Path(settings.signing_key_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole to a private file first and then linked into place: a link never
        # replaces an existing file, so when two processes start together one key wins, and
        # the other never reads a file that is still being written (as it could with O_EXCL).
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".signing-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            os.chmod(temporary, 0o600)
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    value = path.read_text().strip()
    if len(value) < _MIN_KEY_CHARS:
        raise ValueError(f"the signing key in {path} is too short; delete it to create a new one")
    return value.encode()


class CustomerLinkService:
    def __init__(
        self,
        *,
        store: Store,
        sessions: ConnectService,
        audit: AuditLog,
        settings: Settings,
        key: bytes | Callable[[], bytes],
        clock: Callable[[], datetime] | None = None,
        client: MoneyKitClient | None = None,
    ) -> None:
        self._store = store
        # Confirms a customer's relink with MoneyKit; without it no relink counts as confirmed.
        self._client = client
        self._sessions = sessions
        self._audit = audit
        self._settings = settings
        self._key_source = key
        self._key: bytes | None = key if isinstance(key, bytes) else None
        self._clock = clock or _utcnow
        self._ttl = timedelta(hours=settings.customer_link_ttl_hours)

    def _signing_key(self) -> bytes:
        # Loaded on first use, so that building the services never touches the key file.
        if self._key is None:
            assert callable(self._key_source)
            self._key = self._key_source()
        return self._key

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._signing_key(), _DOMAIN + payload.encode(), "sha256").digest())

    # -- creating --------------------------------------------------------------------------------

    def create(
        self, link_id: str, actor: Actor | str, *, reason: str | None = None
    ) -> CustomerLink:
        """A single-use relink link for ``link_id``, valid for the configured TTL.

        Needs ``customer_link.create`` (support or admin) and a link that needs a relink.
        """
        actor = as_actor(actor, self._settings.default_role)
        require(actor, Permission.CUSTOMER_LINK)
        with self._store.read() as session:
            link = session.get(Link, link_id)
            if link is None:
                raise LinkNotFound(link_id)
            customer_id, state, error_code = link.customer_id, link.state, link.error_code
        health = link_health(state, error_code)
        if health is not Health.NEEDS_RELINK:
            self._audit.record(
                actor=actor,
                action="customer_link.create",
                outcome="refused",
                link_id=link_id,
                customer_id=customer_id,
                detail=f"link is {health.value}",
                reason=reason,
            )
            raise RelinkNotNeeded(link_id, health.value, state, error_code)

        now = self._clock()
        expires_at = now + self._ttl
        token_id = uuid.uuid4().hex
        payload = _b64(
            json.dumps(
                {"v": 1, "t": token_id, "l": link_id, "e": int(expires_at.timestamp())},
                separators=(",", ":"),
            ).encode()
        )
        token = f"{payload}.{self._sign(payload)}"
        # The stored expiry is the one inside the token (whole seconds).
        expires_at = datetime.fromtimestamp(int(expires_at.timestamp()), UTC)
        refusal: LiveLinkExists | None = None
        with self._store.write() as session:
            # One live link per link: the check and the insert share one transaction that holds
            # the link's row lock (PostgreSQL; SQLite writers take turns), so two agents sending
            # at the same moment cannot both pass the check.
            session.execute(
                sa.select(Link.link_id).where(Link.link_id == link_id).with_for_update()
            )
            live = session.execute(
                sa.select(CustomerLinkToken.created_by, CustomerLinkToken.expires_at)
                .where(CustomerLinkToken.link_id == link_id, CustomerLinkToken.live_at(now))
                .limit(1)
            ).first()
            if live is not None:
                self._audit.add(
                    session,
                    actor=actor,
                    action="customer_link.create",
                    outcome="refused",
                    link_id=link_id,
                    customer_id=customer_id,
                    detail="a live relink link exists already",
                    reason=reason,
                )
                refusal = LiveLinkExists(link_id, live.created_by, live.expires_at)
            else:
                session.add(
                    CustomerLinkToken(
                        id=token_id,
                        token_sha256=_sha256(token),
                        link_id=link_id,
                        customer_id=customer_id,
                        created_by=actor.name,
                        created_at=now,
                        expires_at=expires_at,
                        reason=(reason or "").strip()[:1000] or None,
                    )
                )
                self._audit.add(
                    session,
                    actor=actor,
                    action="customer_link.create",
                    outcome="created",
                    link_id=link_id,
                    customer_id=customer_id,
                    detail=f"relink link {token_id}, valid until {expires_at:%Y-%m-%d %H:%M} UTC",
                    reason=reason,
                )
        if refusal is not None:
            raise refusal
        return CustomerLink(id=token_id, token=token, link_id=link_id, expires_at=expires_at)

    # -- redeeming -------------------------------------------------------------------------------

    def _open(self, token: str, *, check_expiry: bool) -> CustomerLinkToken:
        """The stored record of a genuine token; raises LinkTampered / LinkExpired."""
        try:
            payload, signature = token.strip().split(".")
            expected = self._sign(payload)
            if not hmac.compare_digest(signature.encode(), expected.encode()):
                raise LinkTampered()
            data = json.loads(_unb64(payload))
            token_id, link_id, expiry = data["t"], data["l"], data["e"]
            if data.get("v") != 1 or not isinstance(expiry, int):
                raise LinkTampered()
        except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError) as exc:
            raise LinkTampered() from exc
        with self._store.read() as session:
            row = session.get(CustomerLinkToken, str(token_id))
        genuine = row is not None and hmac.compare_digest(
            row.token_sha256.encode(), _sha256(token.strip()).encode()
        )
        if row is None or not genuine or row.link_id != link_id:
            raise LinkTampered()
        if check_expiry and self._clock().timestamp() >= expiry:
            raise LinkExpired()
        if row.opened_at is None:
            self._record_opened(row)
        return row

    def _record_opened(self, row: CustomerLinkToken) -> None:
        # Outreach tracking: the first time a genuine token reaches the repair page.
        with self._store.write() as session:
            first = session.execute(
                sa.update(CustomerLinkToken)
                .where(CustomerLinkToken.id == row.id, CustomerLinkToken.opened_at.is_(None))
                .values(opened_at=self._clock())
            )
            if first.rowcount == 1:  # type: ignore[attr-defined]
                self._audit.add(
                    session,
                    actor=self._machine_actor(row),
                    action="customer_link.open",
                    outcome="opened",
                    link_id=row.link_id,
                    customer_id=row.customer_id,
                )

    def check(self, token: str) -> CustomerLinkCheck:
        """What the repair page shows when it opens, without using the token up.

        Raises LinkTampered, LinkExpired or LinkAlreadyUsed at once, so a customer with a bad
        link learns it before pressing anything. Reads only the store (a mail scanner opening
        the URL costs no MoneyKit call). The only write is the first-open mark that outreach
        tracking reads ("opened the repair page").
        """
        row = self._open(token, check_expiry=True)
        if row.used_at is not None:
            raise LinkAlreadyUsed()
        now = self._clock()
        with self._store.read() as session:
            link = session.get(Link, row.link_id)
            name = (
                session.scalar(
                    sa.select(Institution.name).where(
                        Institution.institution_id == link.institution_id
                    )
                )
                if link is not None
                else None
            )
            lease = session.get(RelinkLease, row.link_id)
        if link is None:
            raise LinkTampered()  # the link is gone: the token cannot repair anything
        if lease is not None and _aware(lease.expires_at) > now:
            return CustomerLinkCheck(institution_name=name, repair="in_progress")
        if link_health(link.state, link.error_code) is not Health.NEEDS_RELINK:
            return CustomerLinkCheck(institution_name=name, repair="not_needed")
        return CustomerLinkCheck(institution_name=name, repair="ready")

    def _machine_actor(self, row: CustomerLinkToken) -> str:
        return f"customer-link:{row.id[:12]}"

    def redeem_begin(self, token: str) -> StartedSession:
        """Start the customer's relink; the token is used up from here on.

        Raises LinkTampered, LinkExpired, LinkAlreadyUsed, RelinkNotNeeded (the link recovered)
        or LeaseHeld (staff are relinking it right now; the token stays usable).
        """
        try:
            row = self._open(token, check_expiry=True)
        except (LinkTampered, LinkExpired) as exc:
            self._audit.record(
                actor="customer-link",
                action="customer_link.redeem",
                outcome="expired" if isinstance(exc, LinkExpired) else "tampered",
            )
            raise
        who = self._machine_actor(row)
        now = self._clock()
        with self._store.write() as session:
            won = session.execute(
                sa.update(CustomerLinkToken)
                .where(CustomerLinkToken.id == row.id, CustomerLinkToken.used_at.is_(None))
                .values(used_at=now)
            )
            if won.rowcount != 1:  # type: ignore[attr-defined]
                self._audit.add(
                    session,
                    actor=who,
                    action="customer_link.redeem",
                    outcome="reused",
                    link_id=row.link_id,
                    customer_id=row.customer_id,
                )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            raise LinkAlreadyUsed()
        try:
            started = self._sessions.start_relink_as(
                link_id=row.link_id,
                actor=who,
                holder=f"customer (relink link {row.id[:8]})",
                reason=row.reason,
            )
        except (LeaseHeld, MoneyKitError) as exc:
            # Nothing happened for the customer: give the token back so they can try again.
            self._set(row.id, used_at=None)
            self._audit.record(
                actor=who,
                action="customer_link.redeem",
                outcome="failed",
                link_id=row.link_id,
                customer_id=row.customer_id,
                detail=str(exc),
            )
            if isinstance(exc, LeaseHeld):
                raise RepairInProgress(exc) from exc
            raise
        except ServiceError as exc:
            self._set(row.id, finished_at=self._clock(), outcome="not_needed")
            self._audit.record(
                actor=who,
                action="customer_link.redeem",
                outcome="refused",
                link_id=row.link_id,
                customer_id=row.customer_id,
                detail=str(exc),
            )
            if isinstance(exc, RelinkNotNeeded):
                raise NothingToRepair(exc) from exc
            raise
        self._set(row.id, session_id=started.session_id)
        self._audit.record(
            actor=who,
            action="customer_link.redeem",
            outcome="started",
            link_id=row.link_id,
            customer_id=row.customer_id,
            detail=f"session {started.session_id}",
        )
        return started

    def redeem_finish(self, token: str, entries: Iterable[object] | None) -> CustomerOutcome:
        """Apply the customer's Connect log for the session :meth:`redeem_begin` started.

        Works after the expiry as long as the relink was started in time. A relink success
        from the browser is only a claim (anyone can post a log): it counts as ``success`` once
        MoneyKit, asked through the client, no longer reports the link as needing a relink;
        otherwise the outcome is ``unconfirmed``, recorded and audited as such.
        """
        row = self._open(token, check_expiry=False)
        if row.session_id is None:
            raise LinkTampered()
        if row.finished_at is not None and row.outcome in CUSTOMER_MESSAGES:
            # Decided already (a rerun re-sends the same log): the same answer, no new read.
            kind: CustomerOutcomeKind = row.outcome  # type: ignore[assignment]
            return CustomerOutcome(kind, CUSTOMER_MESSAGES[kind])
        applied = self._sessions.apply_log_as(
            row.session_id, entries, actor=self._machine_actor(row)
        )
        if applied.outcome == "pending":
            return CustomerOutcome("pending", CUSTOMER_MESSAGES["pending"])
        kind = applied.outcome
        detail = applied.message
        if applied.outcome in ("success", "failed"):
            # "failed" is also what the Connect service records when Connect reported the
            # relink but MoneyKit still says the link needs one: the customer hears the same
            # answer either way, decided here by MoneyKit's word.
            confirmed, detail = self._confirmed_by_moneykit(row.link_id)
            kind = "success" if confirmed else "unconfirmed"
        with self._store.write() as session:
            done = session.execute(
                sa.update(CustomerLinkToken)
                .where(CustomerLinkToken.id == row.id, CustomerLinkToken.finished_at.is_(None))
                .values(finished_at=self._clock(), outcome=kind)
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                self._audit.add(
                    session,
                    actor=self._machine_actor(row),
                    action="customer_link.finish",
                    outcome=kind,
                    link_id=row.link_id,
                    customer_id=row.customer_id,
                    detail=detail,
                )
            else:  # another tab finished first: report what it recorded
                stored = session.get(CustomerLinkToken, row.id)
                if stored is not None and stored.outcome in CUSTOMER_MESSAGES:
                    kind = stored.outcome  # type: ignore[assignment]
        return CustomerOutcome(kind, CUSTOMER_MESSAGES[kind])

    def _confirmed_by_moneykit(self, link_id: str) -> tuple[bool, str]:
        """Whether MoneyKit says the link no longer needs a relink, and why, for the audit."""
        if self._client is None:
            return False, "relink reported by Connect; no MoneyKit client to confirm it"
        try:
            link = self._client.get_link(link_id)
        except MoneyKitError as exc:
            return False, f"relink reported by Connect; MoneyKit not asked: {exc}"
        state = f"{link.state}/{link.error_code}" if link.error_code else link.state
        if link_health(link.state, link.error_code) is Health.NEEDS_RELINK:
            return False, f"relink reported by Connect, but MoneyKit still reports {state}"
        return True, f"relink confirmed by MoneyKit ({state})"

    def _set(self, token_id: str, **values: object) -> None:
        with self._store.write() as session:
            session.execute(
                sa.update(CustomerLinkToken)
                .where(CustomerLinkToken.id == token_id)
                .values(**values)
            )
