"""Prometheus metrics (``prometheus-client``), one registry per built ``Services``.

Two kinds, named so a query can tell them apart:

* **Per-process counters and histograms** — what this process did: MoneyKit requests by endpoint
  template and status with their latency, 429s and retries, webhook deliveries received by verdict
  and reason, Connect sessions and relinks by outcome, alert notifications by channel and outcome.
  Sum them across instances (``sum by (…) (rate(…[5m]))``).
* **Shared gauges from the database** (``linkdesk_links``, ``linkdesk_bank_links…``, the lags,
  alerts firing, notifications waiting) — the same value whichever replica or worker is scraped.
  They are computed at most once per ``LINKDESK_METRICS_DB_MAX_AGE_SECONDS`` per process from
  grouped counts (the verdict totals are the ones the pages share), and carry no per-process
  meaning: aggregate them with ``max`` (or scrape one instance), never ``sum``.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from linkdesk.store.engine import Store
from linkdesk.store.models import (
    Alert,
    AlertNotification,
    Institution,
    SyncJob,
    WebhookEvent,
    WorkerState,
)
from linkdesk.store.shared import SharedResult

if TYPE_CHECKING:
    from linkdesk.moneykit.client import RequestEvent
    from linkdesk.store.health_totals import HealthTotals
    from linkdesk.webhooks.receiver import ReceiveResult

__all__ = [
    "CONTENT_TYPE_LATEST",
    "DB_GAUGES_MAX_AGE",
    "Metrics",
    "authorized",
    "serve_metrics",
]

log = logging.getLogger("linkdesk.metrics")

DB_GAUGES_MAX_AGE = 60.0  # the default of LINKDESK_METRICS_DB_MAX_AGE_SECONDS
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True, slots=True)
class _DbSnapshot:
    links: dict[tuple[str, str, str], int]  # (health, state, error) → links
    banks: dict[str, tuple[str, int, int]]  # institution id → (name, links, links in error)
    sync_lag: float
    webhook_lag: float
    webhooks_pending: int
    alerts_firing: dict[str, int]
    notifications: dict[str, int]  # pending | failed
    discovery_missing: int  # known links missing from a suspect discovery listing (0: none)


class _DatabaseCollector(Collector):
    def __init__(self, snapshot: Callable[[], _DbSnapshot | None]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot()
        if snap is None:
            return
        links = GaugeMetricFamily(
            "linkdesk_links",
            "Links by health verdict, state and error code (shared: from the database).",
            labels=["health", "state", "error"],
        )
        for (health, state, error), n in sorted(snap.links.items()):
            links.add_metric([health, state, error], n)
        yield links
        banks = GaugeMetricFamily(
            "linkdesk_bank_links",
            "Links per bank (shared: from the database).",
            labels=["institution", "institution_name"],
        )
        broken = GaugeMetricFamily(
            "linkdesk_bank_links_in_error",
            "Links in state 'error' per bank (shared: from the database).",
            labels=["institution", "institution_name"],
        )
        for bank, (name, total, errors) in sorted(snap.banks.items()):
            banks.add_metric([bank, name], total)
            broken.add_metric([bank, name], errors)
        yield banks
        yield broken
        yield GaugeMetricFamily(
            "linkdesk_sync_lag_seconds",
            "How long the most overdue sync job has waited (shared: from the database).",
            value=snap.sync_lag,
        )
        yield GaugeMetricFamily(
            "linkdesk_webhook_lag_seconds",
            "Age of the oldest verified webhook event not applied yet (shared).",
            value=snap.webhook_lag,
        )
        yield GaugeMetricFamily(
            "linkdesk_webhook_events_pending",
            "Verified webhook events waiting to be applied (shared).",
            value=snap.webhooks_pending,
        )
        firing = GaugeMetricFamily(
            "linkdesk_alerts_firing", "Alerts firing per rule (shared).", labels=["rule"]
        )
        for rule, n in sorted(snap.alerts_firing.items()):
            firing.add_metric([rule], n)
        yield firing
        outbox = GaugeMetricFamily(
            "linkdesk_alert_notifications",
            "Alert notifications still retrying (pending) or given up (failed) (shared).",
            labels=["status"],
        )
        for status in ("pending", "failed"):
            outbox.add_metric([status], snap.notifications.get(status, 0))
        yield outbox
        yield GaugeMetricFamily(
            "linkdesk_discovery_suspect_missing",
            "Known links missing from the last discovery listing when it looked incomplete "
            "(0 when it did not) (shared).",
            value=snap.discovery_missing,
        )


class Metrics:
    """The registry of one process, the hooks that feed it, and its text exposition."""

    def __init__(
        self,
        *,
        store: Store,
        totals: HealthTotals,
        clock: Callable[[], datetime],
        db_max_age: float = DB_GAUGES_MAX_AGE,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._store, self._clock = store, clock
        self._totals = totals
        self._db_max_age = db_max_age
        r = self.registry
        self.moneykit_requests = Counter(
            "linkdesk_moneykit_requests",
            "MoneyKit HTTP attempts by endpoint template, method and status (per process).",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.moneykit_latency = Histogram(
            "linkdesk_moneykit_request_seconds",
            "MoneyKit HTTP attempt latency by endpoint template (per process).",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.moneykit_rate_limited = Counter(
            "linkdesk_moneykit_rate_limited",
            "MoneyKit answers 429 Too Many Requests, by endpoint template (per process).",
            ["endpoint"],
            registry=r,
        )
        self.moneykit_retries = Counter(
            "linkdesk_moneykit_retries",
            "MoneyKit attempts followed by a retry, by endpoint template (per process).",
            ["endpoint"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "linkdesk_webhook_deliveries",
            "Webhook deliveries received by verdict and reason (per process).",
            ["verdict", "reason"],
            registry=r,
        )
        self.connect_sessions = Counter(
            "linkdesk_connect_sessions",
            "Connect sessions by mode (link|relink) and outcome: started, success, exit, "
            "failed (per process).",
            ["mode", "outcome"],
            registry=r,
        )
        self.relinks = Counter(
            "linkdesk_relinks",
            "Relinks started, succeeded and failed (exit or failure) (per process).",
            ["outcome"],
            registry=r,
        )
        self.alert_notifications = Counter(
            "linkdesk_alert_notification_deliveries",
            "Alert notification attempts by channel and outcome: sent, retry, failed "
            "(per process).",
            ["channel", "outcome"],
            registry=r,
        )
        self._db = SharedResult(self._compute_db)
        r.register(_DatabaseCollector(self._snapshot))

    # -- hooks -----------------------------------------------------------------------------------

    def on_moneykit_request(self, event: RequestEvent) -> None:
        self.moneykit_requests.labels(event.endpoint, event.method, event.status).inc()
        self.moneykit_latency.labels(event.endpoint).observe(event.seconds)
        if event.status == "429":
            self.moneykit_rate_limited.labels(event.endpoint).inc()
        if event.retrying:
            self.moneykit_retries.labels(event.endpoint).inc()

    def on_webhook_delivery(self, result: ReceiveResult) -> None:
        self.webhook_deliveries.labels(result.verdict, str(result.reason.value)).inc()

    def on_connect_session(self, mode: str, outcome: str) -> None:
        self.connect_sessions.labels(mode, outcome).inc()
        if mode == "relink":
            relink = {"started": "started", "success": "succeeded"}.get(outcome, "failed")
            self.relinks.labels(relink).inc()

    def on_alert_delivery(self, channel: str, outcome: str) -> None:
        self.alert_notifications.labels(channel, outcome).inc()

    # -- shared gauges ---------------------------------------------------------------------------

    def _snapshot(self) -> _DbSnapshot | None:
        try:
            # An older value is served while one background thread counts (SharedResult), so a
            # scrape waits only for the very first count.
            return self._db.get(self._db_max_age)
        except Exception:
            # A scrape while the database is down shows the process metrics, without these.
            log.exception("metrics: database gauges unavailable")
            return None

    def _compute_db(self) -> _DbSnapshot:
        summary = self._totals.health_summary(max_age=self._db_max_age)
        links = {
            (health.value, state, error): n for (health, state, error), n in summary.groups.items()
        }
        now = self._clock()
        with self._store.read() as session:
            names = dict(
                session.execute(sa.select(Institution.institution_id, Institution.name)).all()
            )
            oldest_due = session.scalar(
                sa.select(sa.func.min(SyncJob.due_at)).where(
                    SyncJob.due_at <= now,
                    sa.or_(SyncJob.claimed_until.is_(None), SyncJob.claimed_until < now),
                )
            )
            oldest_webhook = session.scalar(
                sa.select(sa.func.min(WebhookEvent.received_at)).where(
                    WebhookEvent.status == "pending"
                )
            )
            pending = int(
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(WebhookEvent)
                    .where(WebhookEvent.status == "pending")
                )
                or 0
            )
            firing = dict(
                session.execute(
                    sa.select(Alert.rule_id, sa.func.count())
                    .where(Alert.status == "firing")
                    .group_by(Alert.rule_id)
                ).all()
            )
            notifications = dict(
                session.execute(
                    sa.select(AlertNotification.status, sa.func.count())
                    .where(AlertNotification.status.in_(["pending", "failed"]))
                    .group_by(AlertNotification.status)
                ).all()
            )
            suspect_row = session.get(WorkerState, "discovery_suspect")
            suspect = dict(suspect_row.value or {}) if suspect_row is not None else {}
        missing = suspect.get("missing")
        return _DbSnapshot(
            links=links,
            # From the shared totals, moved by every writer: no count of the links per scrape.
            banks={
                bank: (names.get(bank, bank), counted.links, counted.in_error)
                for bank, counted in summary.banks.items()
            },
            sync_lag=max((now - oldest_due).total_seconds(), 0.0) if oldest_due else 0.0,
            webhook_lag=max((now - oldest_webhook).total_seconds(), 0.0) if oldest_webhook else 0.0,
            webhooks_pending=pending,
            alerts_firing={str(k): int(v) for k, v in firing.items()},
            notifications={str(k): int(v) for k, v in notifications.items()},
            discovery_missing=missing if isinstance(missing, int) and missing > 0 else 0,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format."""
        return generate_latest(self.registry)


def authorized(token: str | None, authorization: str | None) -> bool:
    """True when no token is set, or the header is ``Bearer <token>`` (constant-time compare)."""
    if not token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def serve_metrics(
    metrics: Metrics, *, host: str, port: int, token: str | None
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """``GET /metrics`` on its own small port, in a daemon thread (for ``python -m linkdesk
    worker``, which has no web server). Returns the server (``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            if not authorized(token, self.headers.get("Authorization")):
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Bearer realm="metrics"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds would flood the worker's log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="linkdesk-metrics", daemon=True)
    thread.start()
    return server, thread
