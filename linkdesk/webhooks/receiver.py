"""Receive MoneyKit webhooks fast; ``linkdesk.services.webhook_apply`` applies them later.

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
* the queue is applied by :class:`~linkdesk.services.webhook_apply.WebhookApplier`, oldest event
  first; its pass runs :meth:`WebhookReceiver.flush_refusals` (tallies and retention) first.

Every write goes through :mod:`linkdesk.store.webhook_queue` (and the link row's one writer,
:mod:`linkdesk.store.repository`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from linkdesk.moneykit.webhook_payload import TIMESTAMP_SLACK, WebhookEnvelope, parse_envelope
from linkdesk.store.engine import Store
from linkdesk.store.webhook_queue import (
    prune_webhook_rows,
    queue_delivery,
    stored_refusal_counts,
    write_refusals,
)
from linkdesk.webhooks.verify import Reason, WebhookVerifier

__all__ = ["ReceiveResult", "WebhookReceiver"]

logger = logging.getLogger("linkdesk.webhooks")

MAX_BODY_BYTES = 256 * 1024
# Refusals tallied in memory are written at most this often (and by every apply pass).
REFUSAL_FLUSH_EVERY = timedelta(seconds=5)
RETENTION_EVERY = timedelta(minutes=10)
REFUSED_SAMPLE = 100
DELIVERY_RETENTION = timedelta(days=30)

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


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


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
        clock: Callable[[], datetime] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        refused_sample: int = REFUSED_SAMPLE,
        retention: timedelta = DELIVERY_RETENTION,
    ) -> None:
        self._store = store
        self._verifier = verifier
        self._clock = clock or _utcnow
        self.max_body_bytes = max_body_bytes
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
        # Told every delivery's verdict and reason (metrics listen).
        self.delivery_observers: list[Callable[[ReceiveResult], None]] = []

    # -- receiving -------------------------------------------------------------------------------

    def receive(self, raw_body: bytes, headers: Mapping[str, str]) -> ReceiveResult:
        """Verify, record, deduplicate and queue one delivery; never raises for bad input."""
        result = self._receive(raw_body, headers)
        for observer in self.delivery_observers:
            try:
                observer(result)
            except Exception:
                logger.exception("webhook delivery observer failed")
        return result

    def _receive(self, raw_body: bytes, headers: Mapping[str, str]) -> ReceiveResult:
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
        event = parse_envelope(payload)
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
        event: WebhookEnvelope | None = None,
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
                write_refusals(
                    self._store,
                    counts,
                    rows,
                    last_at=last_at or now,
                    now=now,
                    keep=self._refused_sample,
                )
            if self._pruned_at is None or now - self._pruned_at >= RETENTION_EVERY:
                # Deliveries, and events no longer pending, older than the retention.
                prune_webhook_rows(self._store, now - self._retention)
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

    def refusal_counts(self) -> dict[str, int]:
        """Refused requests per reason since counting began (written ones plus unwritten)."""
        total = stored_refusal_counts(self._store)
        with self._refusal_lock:
            total.update(self._refused_counts)
        return dict(sorted(total.items()))

    def _accept(
        self,
        event: WebhookEnvelope,
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
        accepted = queue_delivery(
            self._store,
            queued,
            accepted_row=self._delivery_row(
                verdict="accepted",
                reason=Reason.OK,
                token=token,
                attempt=attempt,
                received_at=now,
                event=event,
                payload=payload,
            ),
            # The payload is already stored with the accepted delivery; a copy adds nothing.
            duplicate_row=self._delivery_row(
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
