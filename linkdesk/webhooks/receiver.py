"""Receive MoneyKit webhooks fast, apply them later, in the order they happened.

``receive`` does only what must happen before answering: verify, record the attempt, drop
duplicates, and put a verified event in the durable queue (``webhook_events``). MoneyKit retries
anything that is not 2xx for about two hours and does not keep order, so:

* every accepted or duplicate attempt is recorded (``webhook_deliveries``), with its verdict;
  refused requests (forged, unsigned, too large…) are counted per reason and only a bounded
  sample of them is kept as rows. Refusals are tallied in memory and written in the background:
  a refusal never waits for the store, so a flood of forged requests is answered at once even
  while the database is busy or locked, and cannot grow a table without bound;
* deliveries (and applied events) older than the retention are deleted;
* an event's time orders it against others, but MoneyKit's clock is not ours and a signed event
  may be stamped ahead of it: the time used is the event's ``webhook_timestamp`` but never later
  than when it was received, so no event can make genuine later ones look stale;
* an event is queued once per ``webhook_idempotency_key`` (and per delivery token), enforced by
  unique constraints, so two concurrent retries cannot both be queued;
* ``apply_pending`` takes queued events oldest ``webhook_timestamp`` first, and an event older
  than the state already stored for its link is recorded as ``stale_ignored`` instead of applied;
* applying re-reads the link from MoneyKit rather than trusting the payload (MoneyKit's advice);
  only when MoneyKit cannot be reached is a ``link.state_changed`` payload applied, and the link
  is queued for the worker to read as soon as it can.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from linkdesk.auth import Actor, Permission, PermissionDenied, require
from linkdesk.errors import ServiceError
from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.errors import GoneError, MoneyKitError, NotFoundError
from linkdesk.services.audit import AuditLog
from linkdesk.services.ingest import LinkIngestor
from linkdesk.services.institutions import InstitutionFetcher
from linkdesk.services.jobs import PRIORITY_WEBHOOK, JobQueue
from linkdesk.services.ratelimit import RequestBudget
from linkdesk.store.engine import Store
from linkdesk.store.models import Base, Link, WebhookDelivery, WebhookEvent, WorkerState
from linkdesk.store.repository import apply_event_state, mark_link_deleted, put_named_state
from linkdesk.webhooks.verify import Reason, WebhookVerifier

__all__ = ["ApplyReport", "NotReapplicable", "ReapplyResult", "ReceiveResult", "WebhookReceiver"]

logger = logging.getLogger("linkdesk.webhooks")

MAX_BODY_BYTES = 256 * 1024
# webhook_timestamp may have whole-second precision: an event stamped within a second before a
# read may still be newer than that read, so it is re-read rather than ignored (a re-read never
# stores older state; only a clearly older event is ignored).
TIMESTAMP_SLACK = timedelta(seconds=1)
CLAIM_TTL = timedelta(minutes=2)
# Named worker state holding the refusal counters: {"counts": {reason: n}, "since", "last_at"}.
REFUSALS_STATE = "webhook_refusals"
# Refusals tallied in memory are written at most this often (and by every apply pass).
REFUSAL_FLUSH_EVERY = timedelta(seconds=5)
RETENTION_EVERY = timedelta(minutes=10)
REFUSED_SAMPLE = 100
DELIVERY_RETENTION = timedelta(days=30)
FETCHER_LIFETIME = timedelta(hours=1)
_COVERED = "covered by this pass's read of the link"
# Outcomes that changed nothing wait for at most this many others before they are written.
_CLOSE_BATCH = 50
_STATE_EVENT = "link.state_changed"

# The receive path runs thousands of times a minute in a burst: plain Core statements, built
# once (SQLAlchemy caches their compiled form), instead of ORM objects and a flush per delivery.
_EVENTS = Base.metadata.tables[WebhookEvent.__tablename__]
_DELIVERIES = Base.metadata.tables[WebhookDelivery.__tablename__]
_INSERT_DELIVERY = _DELIVERIES.insert()
_LINKS = Base.metadata.tables[Link.__tablename__]
_QUEUE_EVENT = {
    # No conflict target: a clash on either unique column (idempotency key or delivery token)
    # means the event is queued already.
    "sqlite": sqlite.insert(_EVENTS).on_conflict_do_nothing(),
    "postgresql": postgresql.insert(_EVENTS).on_conflict_do_nothing(),
}
_CLOSE_EVENT = (
    sa.update(_EVENTS)
    .where(_EVENTS.c.id == sa.bindparam("event_id"), _EVENTS.c.status == "pending")
    .values(
        status=sa.bindparam("outcome"),
        applied_at=sa.bindparam("done_at"),
        claimed_until=None,
        detail=sa.bindparam("note"),
    )
)
_TOUCH_LINK = (
    sa.update(_LINKS)
    .where(_LINKS.c.link_id == sa.bindparam("link"))
    .values(last_webhook_at=sa.bindparam("at"))
)

# Refusals caused by the request itself get 4xx (MoneyKit would retry them in vain, and a forger
# learns nothing from the status); a problem on our side gets 503 so MoneyKit tries again later.
_STATUS = {
    Reason.OK: 200,
    Reason.DUPLICATE: 200,
    Reason.JWKS_UNAVAILABLE: 503,
    Reason.MALFORMED: 400,
    Reason.BAD_PAYLOAD: 400,
    Reason.TOO_LARGE: 413,
}


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    status_code: int
    verdict: str  # accepted | duplicate | rejected
    reason: Reason

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass(frozen=True, slots=True)
class ApplyReport:
    applied: int = 0
    stale_ignored: int = 0
    queued_for_worker: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class ReapplyResult:
    delivery_id: int
    link_id: str
    status: str  # applied | queued_for_worker | failed
    detail: str


class NotReapplicable(ServiceError):
    """The delivery is unknown, or was never verified (only verified payloads are kept)."""

    def __init__(self, delivery_id: int, why: str) -> None:
        super().__init__(f"Webhook delivery {delivery_id} cannot be re-applied: {why}.")
        self.delivery_id = delivery_id
        self.why = why


@dataclass(frozen=True, slots=True)
class _Event:
    event: str
    idempotency_key: str
    timestamp: datetime
    link_id: str


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _parse_event(payload: Any) -> _Event | None:
    if not isinstance(payload, dict):
        return None
    event = payload.get("webhook_event")
    key = payload.get("webhook_idempotency_key")
    link_id = payload.get("link_id")
    timestamp = _parse_time(payload.get("webhook_timestamp"))
    if not (isinstance(event, str) and event and len(event) <= 60):
        return None
    if not (isinstance(key, str) and key and len(key) <= 200):
        return None
    if not (isinstance(link_id, str) and link_id and len(link_id) <= 200) or timestamp is None:
        return None
    return _Event(event=event, idempotency_key=key, timestamp=timestamp, link_id=link_id)


def _short(value: str | None, limit: int = 200) -> str | None:
    if value is None:
        return None
    cleaned = "".join(ch for ch in value.strip() if ch.isprintable())
    return cleaned[:limit] or None


class WebhookReceiver:
    def __init__(
        self,
        *,
        store: Store,
        verifier: WebhookVerifier,
        client: MoneyKitClient,
        jobs: JobQueue,
        customer_tag_prefix: str = "customer:",
        clock: Callable[[], datetime] | None = None,
        budget: RequestBudget | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        audit: AuditLog | None = None,
        refused_sample: int = REFUSED_SAMPLE,
        retention: timedelta = DELIVERY_RETENTION,
    ) -> None:
        self._store = store
        self._verifier = verifier
        self._client = client
        self._jobs = jobs
        self._clock = clock or _utcnow
        self._budget = budget
        self.max_body_bytes = max_body_bytes
        self._audit = audit or AuditLog(store, clock=self._clock)
        self._ingestor = LinkIngestor(
            store=store, client=client, customer_tag_prefix=customer_tag_prefix, clock=self._clock
        )
        self._fetcher: InstitutionFetcher | None = None
        self._fetcher_since = self._clock()
        self._fetcher_lock = threading.Lock()
        self._refused_sample = max(0, refused_sample)
        self._retention = retention
        # Refusals not yet written: counts per reason and the newest rows of the sample.
        self._refusal_lock = threading.Lock()
        self._refused_counts: Counter[str] = Counter()
        self._refused_rows: deque[dict[str, Any]] = deque(maxlen=self._refused_sample or None)
        self._refused_last_at: datetime | None = None
        self._flushing = False
        self._flushed_at = self._clock()
        self._pruned_at: datetime | None = None

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, raw_body: bytes, headers: Mapping[str, str]) -> ReceiveResult:
        """Verify, record, deduplicate and queue one delivery; never raises for bad input."""
        token = _short(_header(headers, "MoneyKit-Delivery-Token"))
        attempt_text = _header(headers, "MoneyKit-Delivery-Attempt") or ""
        attempt = int(attempt_text) if attempt_text.strip().isdigit() else None
        if attempt is not None and attempt > 1_000_000:
            attempt = None

        if len(raw_body) > self.max_body_bytes:
            return self._reject(Reason.TOO_LARGE, token, attempt)
        verdict = self._verifier.verify(raw_body, _header(headers, "MoneyKit-Signature"))
        if not verdict.ok:
            return self._reject(verdict.reason, token, attempt)
        try:
            payload = json.loads(raw_body)
        except ValueError:
            payload = None
        event = _parse_event(payload)
        if event is None:
            return self._reject(Reason.BAD_PAYLOAD, token, attempt)
        assert isinstance(payload, dict)
        return self._accept(event, payload, token, attempt)

    def _delivery_row(
        self,
        *,
        verdict: str,
        reason: Reason,
        token: str | None,
        attempt: int | None,
        received_at: datetime,
        event: _Event | None = None,
        payload: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "delivery_token": token,
            "received_at": received_at,
            "event": event.event if event else None,
            "link_id": event.link_id if event else None,
            "verdict": verdict,
            "payload": payload,
            "idempotency_key": event.idempotency_key if event else None,
            "attempt": attempt,
            "reason": reason.value,
            "event_timestamp": event.timestamp if event else None,
        }

    def _reject(self, reason: Reason, token: str | None, attempt: int | None) -> ReceiveResult:
        """Count a refusal in memory and answer; the store is not touched on this path."""
        self.count_refusal(reason, token, attempt)
        status = _STATUS.get(reason, 401)
        logger.info("webhook refused: %s (delivery %s)", reason.value, token or "-")
        return ReceiveResult(status, "rejected", reason)

    def count_refusal(self, reason: Reason, token: str | None, attempt: int | None) -> None:
        """Tally one refused request; written by :meth:`flush_refusals`, soon, in the
        background. The body of a refused request is never kept: it may be forged, or not ours.
        """
        now = self._clock()
        token = _short(token)
        # The sample only holds rows this process has not written yet; the deque drops the
        # oldest beyond its size, so memory stays bounded whatever the flood.
        row = self._delivery_row(
            verdict="rejected", reason=reason, token=token, attempt=attempt, received_at=now
        )
        with self._refusal_lock:
            self._refused_counts[reason.value] += 1
            self._refused_last_at = now
            if self._refused_sample:
                self._refused_rows.append(row)
            due = not self._flushing and now - self._flushed_at >= REFUSAL_FLUSH_EVERY
            if due:
                self._flushing = True
        if due:
            threading.Thread(
                target=self._flush_in_background, name="linkdesk-webhook-refusals", daemon=True
            ).start()

    def _flush_in_background(self) -> None:
        try:
            self.flush_refusals(already_flushing=True)
        except Exception as exc:
            # The tallies were put back; the next refusal or apply pass tries again.
            logger.warning("webhook refusals not written yet (%s)", type(exc).__name__)

    def flush_refusals(self, *, already_flushing: bool = False) -> int:
        """Write the tallied refusals: add to the per-reason counters, store the sample rows,
        keep only the newest ``refused_sample`` refused rows, and apply the retention to every
        delivery row (at most every few minutes). Returns the refusals written.
        """
        with self._refusal_lock:
            if self._flushing and not already_flushing:
                return 0  # another thread is writing them now
            self._flushing = True
            counts = self._refused_counts
            rows = list(self._refused_rows)
            last_at = self._refused_last_at
            self._refused_counts = Counter()
            self._refused_rows.clear()
        try:
            now = self._clock()
            if counts:
                self._write_refusals(counts, rows, last_at or now, now)
            if self._pruned_at is None or now - self._pruned_at >= RETENTION_EVERY:
                self._prune(now)
                self._pruned_at = now
        except Exception:
            with self._refusal_lock:
                # Put them back so nothing is lost; the sample stays bounded by its deque.
                self._refused_counts.update(counts)
                for row in reversed(rows):
                    if len(self._refused_rows) < (self._refused_rows.maxlen or len(rows) + 1):
                        self._refused_rows.appendleft(row)
            raise
        finally:
            with self._refusal_lock:
                self._flushing = False
                self._flushed_at = self._clock()
        return sum(counts.values())

    def _write_refusals(
        self, counts: Counter[str], rows: list[dict[str, Any]], last_at: datetime, now: datetime
    ) -> None:
        deliveries = _DELIVERIES
        with self._store.write() as session:
            # Locked: the counters are a read-modify-write shared by every process.
            stored = session.get(WorkerState, REFUSALS_STATE, with_for_update=True)
            value = dict(stored.value or {}) if stored is not None else {}
            merged = Counter({k: int(v) for k, v in dict(value.get("counts") or {}).items()})
            merged.update(counts)
            put_named_state(
                session,
                REFUSALS_STATE,
                {
                    "counts": dict(sorted(merged.items())),
                    "since": value.get("since") or now.isoformat(),
                    "last_at": last_at.isoformat(),
                },
                now,
            )
            connection = session.connection()
            if rows:
                connection.execute(_INSERT_DELIVERY, rows)
            # The sample: the newest refused rows; older ones only live on in the counters.
            cutoff = connection.scalar(
                sa.select(deliveries.c.id)
                .where(deliveries.c.verdict == "rejected")
                .order_by(deliveries.c.id.desc())
                .offset(self._refused_sample)
                .limit(1)
            )
            if cutoff is not None:
                connection.execute(
                    sa.delete(deliveries).where(
                        deliveries.c.verdict == "rejected", deliveries.c.id <= cutoff
                    )
                )

    def _prune(self, now: datetime) -> None:
        """Delete deliveries, and events no longer pending, older than the retention."""
        cutoff = now - self._retention
        with self._store.write() as session:
            connection = session.connection()
            connection.execute(sa.delete(_DELIVERIES).where(_DELIVERIES.c.received_at < cutoff))
            connection.execute(
                sa.delete(_EVENTS).where(
                    _EVENTS.c.status != "pending", _EVENTS.c.received_at < cutoff
                )
            )

    def refusal_counts(self) -> dict[str, int]:
        """Refused requests per reason since counting began (written ones plus unwritten)."""
        with self._store.read() as session:
            stored = session.get(WorkerState, REFUSALS_STATE)
            value = dict(stored.value or {}) if stored is not None else {}
        total = Counter({k: int(v) for k, v in dict(value.get("counts") or {}).items()})
        with self._refusal_lock:
            total.update(self._refused_counts)
        return dict(sorted(total.items()))

    def _accept(
        self,
        event: _Event,
        payload: dict[str, Any],
        token: str | None,
        attempt: int | None,
    ) -> ReceiveResult:
        """Queue the event and record the delivery in one transaction.

        The unique constraints on ``webhook_events`` (idempotency key, delivery token) decide
        what is a duplicate: the insert skips a conflicting row instead of failing, so a retry,
        a second delivery of the same event and a concurrent copy arriving at another process
        all come out as "nothing inserted". On PostgreSQL an insert that meets an uncommitted
        row with the same key waits for that transaction and then skips (or inserts, if it
        rolled back); SQLite's writers take turns. No query before the insert is needed.
        """
        now = self._clock()
        # Ordered by a time that cannot be pushed past ours: a signed event stamped ahead of
        # the receive time would otherwise make every genuine later event look stale.
        ordered_at = min(event.timestamp, now)
        if event.timestamp > now + TIMESTAMP_SLACK:
            logger.warning(
                "webhook for link %s stamped %.0f s ahead of its receipt; ordered by receipt",
                event.link_id,
                (event.timestamp - now).total_seconds(),
            )
        queued = {
            "idempotency_key": event.idempotency_key,
            "delivery_token": token,
            "event": event.event,
            "link_id": event.link_id,
            "webhook_timestamp": ordered_at,
            "payload": payload,
            "received_at": now,
            "status": "pending",
        }
        with self._store.write() as session:
            connection = session.connection()
            accepted = self._queue_once(connection, queued)
            if accepted:
                connection.execute(
                    _INSERT_DELIVERY,
                    self._delivery_row(
                        verdict="accepted",
                        reason=Reason.OK,
                        token=token,
                        attempt=attempt,
                        received_at=now,
                        event=event,
                        payload=payload,
                    ),
                )
                connection.execute(_TOUCH_LINK, {"link": event.link_id, "at": now})
            else:
                # The payload is already stored with the accepted delivery; a copy adds nothing.
                connection.execute(
                    _INSERT_DELIVERY,
                    self._delivery_row(
                        verdict="duplicate",
                        reason=Reason.DUPLICATE,
                        token=token,
                        attempt=attempt,
                        received_at=now,
                        event=event,
                    ),
                )
        if accepted:
            return ReceiveResult(202, "accepted", Reason.OK)
        return ReceiveResult(200, "duplicate", Reason.DUPLICATE)

    def _queue_once(self, connection: sa.Connection, values: dict[str, Any]) -> bool:
        """Insert the event unless a unique constraint says it is queued already."""
        statement = _QUEUE_EVENT.get(connection.dialect.name)
        if statement is not None:
            return connection.execute(statement, values).rowcount == 1
        # Other backends: a savepoint turns the constraint violation into "already queued".
        try:
            with connection.begin_nested():
                connection.execute(_EVENTS.insert(), values)
        except sa.exc.IntegrityError:
            return False
        return True

    # -- applying --------------------------------------------------------------------------------

    def _claim(self, worker: str, limit: int) -> list[int]:
        """Claim up to ``limit`` pending events, oldest event time first, in one statement."""
        now = self._clock()
        token = f"{worker[:80]}:{uuid.uuid4().hex[:12]}"
        free = sa.or_(WebhookEvent.claimed_until.is_(None), WebhookEvent.claimed_until < now)
        candidates = (
            sa.select(WebhookEvent.id)
            .where(WebhookEvent.status == "pending", free)
            .order_by(WebhookEvent.webhook_timestamp.asc(), WebhookEvent.id.asc())
            .limit(limit)
        )
        if self._store.dialect == "postgresql":
            # Other appliers skip these rows instead of waiting for this transaction.
            candidates = candidates.with_for_update(skip_locked=True)
        with self._store.write() as session:
            ids = list(session.scalars(candidates).all())
            if not ids:
                return []
            # Still conditional: only rows nobody else holds are taken; RETURNING says which.
            won = set(
                session.scalars(
                    sa.update(WebhookEvent)
                    .where(WebhookEvent.id.in_(ids), WebhookEvent.status == "pending", free)
                    .values(claimed_by=token, claimed_until=now + CLAIM_TTL)
                    .returning(WebhookEvent.id)
                    .execution_options(synchronize_session=False)
                ).all()
            )
        return [event_id for event_id in ids if event_id in won]

    def _close(self, outcomes: list[dict[str, Any]]) -> None:
        """Record the outcome of claimed events (one transaction for all of them)."""
        if not outcomes:
            return
        with self._store.write() as session:
            session.connection().execute(_CLOSE_EVENT, outcomes)

    def _institutions(self) -> InstitutionFetcher:
        # Kept across passes like the worker's: each call making its own fetcher read every
        # re-read link's institution again, out of the same MoneyKit budget.
        now = self._clock()
        with self._fetcher_lock:
            if self._fetcher is None or now - self._fetcher_since > FETCHER_LIFETIME:
                self._fetcher = InstitutionFetcher(self._client)
                self._fetcher_since = now
            return self._fetcher

    def apply_pending(self, limit: int = 200, *, worker: str = "webhooks") -> ApplyReport:
        """Apply queued events, oldest event time first; each is applied at most once.

        Outcomes that changed nothing (an event older than the stored state, or covered by a
        read earlier in the pass) are recorded together with the next outcome that did, or at
        the end of the pass: one write instead of one each. Should the process die before that,
        those events are claimed again later and come to the same outcome.
        """
        try:
            self.flush_refusals()
        except Exception as exc:
            logger.warning("webhook refusals not written yet (%s)", type(exc).__name__)
        counts = {"applied": 0, "stale_ignored": 0, "queued_for_worker": 0, "failed": 0}
        read_at: dict[str, datetime] = {}  # links already re-read in this pass
        fetcher = self._institutions()
        unrecorded: list[dict[str, Any]] = []
        try:
            for event_id in self._claim(worker, limit):
                with self._store.read() as session:
                    row = session.get(WebhookEvent, event_id)
                    if row is None or row.status != "pending":
                        continue
                    link_id, kind, at = row.link_id, row.event, row.webhook_timestamp
                    payload = dict(row.payload or {})
                    stored = session.get(Link, link_id)
                    as_of = stored.state_as_of if stored is not None else None
                try:
                    status, detail = self._apply_one(
                        link_id, kind, at, payload, as_of, read_at, fetcher
                    )
                except Exception as exc:
                    logger.exception("webhook event %s could not be applied", event_id)
                    status, detail = "failed", f"internal error ({type(exc).__name__})"
                counts[status if status in counts else "applied"] += 1
                unrecorded.append(
                    {
                        "event_id": event_id,
                        "outcome": status if status != "queued_for_worker" else "applied",
                        "done_at": self._clock(),
                        "note": (detail or "")[:300] or None,
                    }
                )
                changed_nothing = status == "stale_ignored" or detail == _COVERED
                if not changed_nothing or len(unrecorded) >= _CLOSE_BATCH:
                    self._close(unrecorded)
                    unrecorded = []
        finally:
            self._close(unrecorded)
        return ApplyReport(**counts)

    def _apply_one(
        self,
        link_id: str,
        kind: str,
        at: datetime,
        payload: dict[str, Any],
        as_of: datetime | None,
        read_at: dict[str, datetime],
        fetcher: InstitutionFetcher,
    ) -> tuple[str, str]:
        now = self._clock()
        # Never later than now (re-applied deliveries carry the time the event claims).
        at = min(at, now)
        # A stored time ahead of now was pushed there (by an event stamped in the future before
        # events were ordered by receipt): it proves nothing, so the link is re-read instead.
        trusted_as_of = as_of if as_of is not None and as_of <= now + TIMESTAMP_SLACK else None
        stale = trusted_as_of is not None and at < trusted_as_of - TIMESTAMP_SLACK
        if kind == _STATE_EVENT and stale and trusted_as_of is not None:
            return "stale_ignored", f"older than the stored state ({trusted_as_of.isoformat()})"
        if link_id in read_at and at < read_at[link_id] - TIMESTAMP_SLACK:
            return "applied", _COVERED
        if self._budget is not None and self._budget.try_acquire("link", link_id) > 0:
            self._jobs.request(link_id, priority=PRIORITY_WEBHOOK)
            return "queued_for_worker", "rate budget spent; the worker reads the link"
        fetched_at = self._clock()
        try:
            link = self._client.get_link(link_id)
        except GoneError:
            with self._store.write() as session:
                mark_link_deleted(session, link_id, now=self._clock(), source="webhook")
            return "applied", "link is gone at MoneyKit"
        except NotFoundError:
            # A 404 is not proof of deletion (wrong client id, proxy, upstream bug): the link is
            # kept and its own job reads it again later.
            self._jobs.request(link_id, priority=PRIORITY_WEBHOOK)
            return "queued_for_worker", "MoneyKit answered 404; link kept, read again later"
        except MoneyKitError as exc:
            applied = False
            if kind == _STATE_EVENT and isinstance(payload.get("state"), str):
                error = payload.get("error")
                with self._store.write() as session:
                    applied = apply_event_state(
                        session,
                        link_id,
                        state=str(payload["state"])[:40],
                        error_code=str(error)[:60] if isinstance(error, str) else None,
                        as_of=at,
                        now=self._clock(),
                    )
            self._jobs.request(link_id, priority=PRIORITY_WEBHOOK)
            how = "payload state applied" if applied else "nothing applied"
            return "queued_for_worker", f"MoneyKit not reachable ({exc.user_message}); {how}"
        self._ingestor.ingest(link, source="webhook", fetcher=fetcher, fetched_at=fetched_at)
        with self._store.write() as session:
            # The state read now is at least as new as the event that caused the read.
            session.execute(
                sa.update(Link)
                .where(
                    Link.link_id == link_id,
                    sa.or_(
                        Link.state_as_of.is_(None),
                        Link.state_as_of < at,
                        # Pushed into the future before: the read just made is the truth now.
                        Link.state_as_of > now + TIMESTAMP_SLACK,
                    ),
                )
                .values(state_as_of=max(at, fetched_at))
            )
        read_at[link_id] = max(fetched_at, at)
        return "applied", f"re-read from MoneyKit: {link.state}" + (
            f"/{link.error_code}" if link.error_code else ""
        )

    # -- re-applying -----------------------------------------------------------------------------

    def reapply(
        self, delivery_id: int, actor: Actor, *, reason: str | None = None
    ) -> ReapplyResult:
        """Apply a stored, verified delivery again, now (admin; audited as ``webhook.reapply``).

        For when a link's stored state looks wrong after a delivery, e.g. MoneyKit was not
        reachable when it was applied. The link is re-read from MoneyKit as ``apply_pending``
        would, except that the event is not skipped for being older than the stored state (a
        re-read never stores older state anyway). The queue's own record of the event is left
        untouched: this is a staff action, not a second delivery.
        """
        try:
            require(actor, Permission.SYNC_TRIGGER)
        except PermissionDenied:
            self._audit.record(
                actor=actor,
                action="webhook.reapply",
                outcome="refused",
                detail=f"delivery {delivery_id}: role may not re-apply webhooks",
                reason=reason,
            )
            raise
        with self._store.read() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            if delivery is None:
                raise NotReapplicable(delivery_id, "no such delivery")
            payload = dict(delivery.payload) if isinstance(delivery.payload, dict) else None
            event = _parse_event(payload) if delivery.verdict == "accepted" else None
            link = session.get(Link, event.link_id) if event is not None else None
            customer_id = link.customer_id if link is not None else None
        if event is None or payload is None:
            raise NotReapplicable(delivery_id, "only verified deliveries keep a payload")
        try:
            status, detail = self._apply_one(
                event.link_id,
                event.event,
                event.timestamp,
                payload,
                None,
                {},
                InstitutionFetcher(self._client),
            )
        except Exception as exc:
            logger.exception("webhook delivery %s could not be re-applied", delivery_id)
            status, detail = "failed", f"internal error ({type(exc).__name__})"
        self._audit.record(
            actor=actor,
            action="webhook.reapply",
            outcome=status,
            link_id=event.link_id,
            customer_id=customer_id,
            detail=f"delivery {delivery_id} ({event.event}): {detail}",
            reason=reason,
        )
        return ReapplyResult(
            delivery_id=delivery_id, link_id=event.link_id, status=status, detail=detail
        )
