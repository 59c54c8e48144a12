"""Signed webhook delivery, done by one background thread owned by the app.

The event loop only *enqueues* deliveries (a bounded queue, so a slow receiver cannot grow memory
without limit); the worker thread POSTs them with ``httpx``, retries non-2xx answers with
exponential backoff and gives up after ``retry_window`` seconds, as MoneyKit does for about two
hours. ``time_scale`` divides every wait, so tests can run the whole two-hour schedule in
seconds. Every attempt is recorded and shown at ``GET /_sandbox/webhooks``.

Signature (protocol doc §5.3): an ES256 JWT in ``MoneyKit-Signature`` with header
``{alg, kid, typ}`` and claims ``iss``, ``iat`` and ``request_body_sha256`` (hex SHA-256 of the
exact body bytes). Each attempt is signed again, with a fresh ``iat``, so receivers that enforce a
five-minute maximum age still accept late retries; the delivery token stays the same across
attempts (both are unverified choices, see the README).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import itertools
import json
import queue
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sandbox.keys import SigningKey

DEFAULT_RETRY_WINDOW_S = 2 * 3600.0
DEFAULT_FIRST_BACKOFF_S = 30.0
QUEUE_SIZE = 1000
RECORDS_KEPT = 2000
ATTEMPT_TIMEOUT_S = 5.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(key: SigningKey, body: bytes, *, issuer: str, issued_at: int) -> str:
    """The compact JWS for ``body``: ES256, raw r||s signature (not DER)."""
    header = {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    claims = {
        "iss": issuer,
        "iat": issued_at,
        "request_body_sha256": hashlib.sha256(body).hexdigest(),
    }
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    der = key.private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@dataclass
class WebhookFaults:
    """Delivery faults for tests, drawn from a seeded RNG so runs repeat."""

    drop_rate: float = 0.0  # share of deliveries lost for good (never sent, never retried)
    duplicate_rate: float = 0.0  # share sent twice
    reorder_rate: float = 0.0  # share held back so later deliveries overtake them
    reorder_delay_s: float = 1.0
    seed: int = 0


@dataclass
class WebhookConfig:
    retry_window_s: float = DEFAULT_RETRY_WINDOW_S
    first_backoff_s: float = DEFAULT_FIRST_BACKOFF_S
    # Waits are divided by this: 1 is real time, 3600 runs the two-hour schedule in two seconds.
    time_scale: float = 1.0


@dataclass(order=True)
class _Job:
    due: float
    order: int
    delivery: Delivery = field(compare=False)


@dataclass
class Delivery:
    delivery_token: str
    url: str
    event: str
    link_id: str
    idempotency_key: str
    body: bytes
    attempt: int = 0
    # Schedule time spent so far (sum of backoffs, before `time_scale`); the retry window
    # counts this, so an accelerated schedule gives up after the same number of attempts.
    elapsed_s: float = 0.0


class WebhookDispatcher:
    """Queue + worker thread + attempt log. Start is lazy; :meth:`stop` joins the thread."""

    def __init__(
        self,
        *,
        signing_key: Callable[[], SigningKey],
        clock: Callable[[], datetime],
        issuer: Callable[[], str],
        config: WebhookConfig | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._signing_key = signing_key
        self._clock = clock
        self._issuer = issuer
        self.config = config or WebhookConfig()
        self.faults = WebhookFaults()
        self._fault_rng = random.Random(0)
        self._transport = transport
        self._inbox: queue.Queue[Delivery] = queue.Queue(maxsize=QUEUE_SIZE)
        self._lock = threading.Lock()
        self._records: deque[dict[str, Any]] = deque(maxlen=RECORDS_KEPT)
        self._waiting = 0
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()

    # ---------------------------------------------------------------------------- control
    def set_faults(self, faults: WebhookFaults) -> None:
        with self._lock:
            self.faults = faults
            self._fault_rng = random.Random(faults.seed)

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    def pending(self) -> int:
        with self._lock:
            return self._waiting + self._inbox.qsize()

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="sandbox-webhooks", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None

    # ---------------------------------------------------------------------------- enqueue
    def enqueue(self, *, url: str, event: str, link_id: str, payload: dict[str, Any]) -> str:
        """Queue a delivery; returns its delivery token (also when the queue is full)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        delivery = Delivery(
            delivery_token=f"whd_{secrets.token_hex(12)}",
            url=url,
            event=event,
            link_id=link_id,
            idempotency_key=str(payload.get("webhook_idempotency_key", "")),
            body=body,
        )
        try:
            self._inbox.put_nowait(delivery)
        except queue.Full:
            self._record(delivery, outcome="dropped", error="queue full")
            return delivery.delivery_token
        self.start()
        self._wake.set()
        return delivery.delivery_token

    # ----------------------------------------------------------------------------- worker
    def _record(
        self,
        delivery: Delivery,
        *,
        outcome: str,
        status: int | None = None,
        error: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        entry = {
            "delivery_token": delivery.delivery_token,
            "event": delivery.event,
            "link_id": delivery.link_id,
            "url": delivery.url,
            "webhook_idempotency_key": delivery.idempotency_key,
            "attempt": delivery.attempt,
            "outcome": outcome,
            "status_code": status,
            "error": error,
            "at": self._clock().isoformat(),
            "payload": json.loads(delivery.body),
            "headers": headers or {},
        }
        with self._lock:
            self._records.append(entry)

    def _run(self) -> None:
        heap: list[_Job] = []
        with httpx.Client(timeout=ATTEMPT_TIMEOUT_S, transport=self._transport) as client:
            while not self._stopping.is_set():
                self._drain_inbox(heap)
                now = time.monotonic()
                if heap and heap[0].due <= now:
                    job = heapq.heappop(heap)
                    with self._lock:
                        self._waiting = len(heap)
                    self._attempt(client, heap, job.delivery)
                    continue
                wait = min(heap[0].due - now, 0.5) if heap else 0.5
                self._wake.wait(max(wait, 0.0))
                self._wake.clear()

    def _drain_inbox(self, heap: list[_Job]) -> None:
        while True:
            try:
                delivery = self._inbox.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                faults, rng = self.faults, self._fault_rng
                dropped = rng.random() < faults.drop_rate
                duplicated = rng.random() < faults.duplicate_rate
                held = rng.random() < faults.reorder_rate
            if dropped:
                delivery.attempt = 1
                self._record(delivery, outcome="dropped", error="dropped by fault injection")
                continue
            delay = faults.reorder_delay_s if held else 0.0
            self._push(heap, delivery, delay)
            if duplicated:
                twin = Delivery(**{**delivery.__dict__})
                self._push(heap, twin, delay)
        with self._lock:
            self._waiting = len(heap)

    def _push(self, heap: list[_Job], delivery: Delivery, delay_s: float) -> None:
        heapq.heappush(heap, _Job(time.monotonic() + delay_s, next(self._order), delivery))

    def _attempt(self, client: httpx.Client, heap: list[_Job], delivery: Delivery) -> None:
        delivery.attempt += 1
        now = self._clock().timestamp()
        signature = sign(
            self._signing_key(), delivery.body, issuer=self._issuer(), issued_at=int(now)
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "MoneyKit-Sandbox-Webhooks/1",
            "MoneyKit-Signature": signature,
            "MoneyKit-Delivery-Token": delivery.delivery_token,
            "MoneyKit-Delivery-Attempt": str(delivery.attempt),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = client.post(delivery.url, content=delivery.body, headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        shown = {k: v for k, v in headers.items() if k != "User-Agent"}
        if status is not None and 200 <= status < 300:
            self._record(delivery, outcome="delivered", status=status, headers=shown)
            return
        backoff = self.config.first_backoff_s * (2 ** (delivery.attempt - 1))
        if delivery.elapsed_s + backoff > self.config.retry_window_s:
            self._record(delivery, outcome="gave_up", status=status, error=error, headers=shown)
            return
        delivery.elapsed_s += backoff
        self._record(delivery, outcome="retrying", status=status, error=error, headers=shown)
        self._push(heap, delivery, backoff / max(self.config.time_scale, 1e-9))
