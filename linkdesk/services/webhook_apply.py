"""Apply queued MoneyKit webhooks, in the order they happened, each at most once.

The receiver (``linkdesk.webhooks``) verified and queued them; applying is the services' job,
beside sync, because it is the same work: read the link from MoneyKit and store it.

* ``apply_pending`` takes queued events oldest ``webhook_timestamp`` first; an event older than
  the state already stored for its link is recorded as ``stale_ignored`` instead of applied;
* applying re-reads the link from MoneyKit rather than trusting the payload (MoneyKit's advice);
  only when MoneyKit cannot be reached is a ``link.state_changed`` payload applied, and the link
  is queued for the worker to read as soon as it can;
* ``reapply`` is the admin's "apply this delivery again, now".

The path of one event to the ``links`` row: :func:`claim_events` → :func:`pending_event` →
``MoneyKitClient.get_link`` → ``LinkIngestor.ingest`` (``upsert_link``) →
:func:`record_read_state_as_of` → :func:`close_events`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from linkdesk.auth import Actor, Permission, PermissionDenied, require
from linkdesk.errors import ServiceError
from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.errors import GoneError, MoneyKitError, NotFoundError
from linkdesk.moneykit.webhook_payload import STATE_CHANGED, TIMESTAMP_SLACK, parse_envelope
from linkdesk.services.audit import AuditLog
from linkdesk.services.ingest import LinkIngestor
from linkdesk.services.institutions import InstitutionFetcher
from linkdesk.services.ratelimit import RequestBudget
from linkdesk.store.engine import Store
from linkdesk.store.health_totals import HealthTotals
from linkdesk.store.models import Link, WebhookDelivery
from linkdesk.store.repository import apply_event_state, mark_link_deleted, record_read_state_as_of
from linkdesk.store.sync_jobs import PRIORITY_WEBHOOK, JobQueue
from linkdesk.store.webhook_queue import claim_events, close_events, pending_event

__all__ = [
    "ApplyReport",
    "NotReapplicable",
    "ReapplyResult",
    "WebhookApplier",
]

logger = logging.getLogger("linkdesk.webhooks")

CLAIM_TTL = timedelta(minutes=2)
FETCHER_LIFETIME = timedelta(hours=1)
_COVERED = "covered by this pass's read of the link"
# Outcomes that changed nothing wait for at most this many others before they are written.
_CLOSE_BATCH = 50


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


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WebhookApplier:
    def __init__(
        self,
        *,
        store: Store,
        client: MoneyKitClient,
        jobs: JobQueue,
        customer_tag_prefix: str = "customer:",
        clock: Callable[[], datetime] | None = None,
        budget: RequestBudget | None = None,
        audit: AuditLog | None = None,
        before_pass: Sequence[Callable[[], object]] = (),
        totals: HealthTotals | None = None,
    ) -> None:
        """``before_pass``: housekeeping run at the start of every pass (the receiver's refusal
        tallies and retention), each failure logged and left for the next pass. ``totals``: the
        shared totals that follow each link this applier changes."""
        self._store = store
        self._totals = totals
        self._client = client
        self._jobs = jobs
        self._clock = clock or _utcnow
        self._budget = budget
        self._audit = audit or AuditLog(store, clock=self._clock)
        self._before_pass = tuple(before_pass)
        # The totals a page shows follow each link at once: a relink's webhook often lands
        # before the agent's Done, and then the relink itself moves nothing.
        self._ingestor = LinkIngestor(
            store=store,
            client=client,
            customer_tag_prefix=customer_tag_prefix,
            clock=self._clock,
            totals=totals,
        )
        self._fetcher: InstitutionFetcher | None = None
        self._fetcher_since = self._clock()
        self._fetcher_lock = threading.Lock()

    def _writing(self, link_id: str) -> AbstractContextManager[Session]:
        """A write transaction on ``link_id`` that moves it between the shared totals."""
        return self._totals.writing(link_id) if self._totals is not None else self._store.write()

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
        for housekeeping in self._before_pass:
            try:
                housekeeping()
            except Exception as exc:
                logger.warning("webhook housekeeping not done yet (%s)", type(exc).__name__)
        counts = {"applied": 0, "stale_ignored": 0, "queued_for_worker": 0, "failed": 0}
        read_at: dict[str, datetime] = {}  # links already re-read in this pass
        fetcher = self._institutions()
        unrecorded: list[dict[str, Any]] = []
        token = f"{worker[:80]}:{uuid.uuid4().hex[:12]}"
        try:
            claimed = claim_events(
                self._store, token, limit=limit, now=self._clock(), ttl=CLAIM_TTL
            )
            for event_id in claimed:
                event = pending_event(self._store, event_id)
                if event is None:
                    continue
                try:
                    status, detail = self._apply_one(
                        event.link_id,
                        event.event,
                        event.timestamp,
                        event.payload,
                        event.link_state_as_of,
                        read_at,
                        fetcher,
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
                    close_events(self._store, unrecorded)
                    unrecorded = []
        finally:
            close_events(self._store, unrecorded)
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
        if kind == STATE_CHANGED and stale and trusted_as_of is not None:
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
            with self._writing(link_id) as session:
                mark_link_deleted(session, link_id, now=self._clock(), source="webhook")
            return "applied", "link is gone at MoneyKit"
        except NotFoundError:
            # A 404 is not proof of deletion (wrong client id, proxy, upstream bug): the link is
            # kept and its own job reads it again later.
            self._jobs.request(link_id, priority=PRIORITY_WEBHOOK)
            return "queued_for_worker", "MoneyKit answered 404; link kept, read again later"
        except MoneyKitError as exc:
            applied = False
            if kind == STATE_CHANGED and isinstance(payload.get("state"), str):
                error = payload.get("error")
                with self._writing(link_id) as session:
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
            record_read_state_as_of(
                session, link_id, event_at=at, read_at=fetched_at, now=now, slack=TIMESTAMP_SLACK
            )
        read_at[link_id] = max(fetched_at, at)
        return "applied", f"re-read from MoneyKit: {link.state}" + (
            f"/{link.error_code}" if link.error_code else ""
        )

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
            event = parse_envelope(payload) if delivery.verdict == "accepted" else None
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
