"""The one place where Linkdesk's parts are put together.

Production (``server.py`` and the dashboard's pages through ``process_services``, the CLI) and
tests call the same ``build_services``; tests pass fakes or in-memory parts. Every default is built
inside the function, so importing this module has no side effects.
"""

from __future__ import annotations

import gc
import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.engine import Engine

from linkdesk.alerts import AlertRunner, AlertService, Dispatcher, build_channels
from linkdesk.alerts.rollup import StateChangeRollup
from linkdesk.demo import DemoService, SandboxControls
from linkdesk.health import HealthThresholds
from linkdesk.metrics import Metrics
from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.images import ImagePolicy
from linkdesk.read.activity import ActivityReads
from linkdesk.read.funnel import FunnelReads
from linkdesk.read.link_detail import LinkDetailReads
from linkdesk.read.links import LinkQueries
from linkdesk.read.overview import OverviewReads
from linkdesk.read.overview_history import OverviewHistory
from linkdesk.read.timeline import TimelineReads
from linkdesk.read.webhooks import DeliveryReads
from linkdesk.read.worker import WorkerProgress
from linkdesk.services.audit import AuditLog
from linkdesk.services.connect import ConnectService
from linkdesk.services.customer_links import CustomerLinkService, load_signing_key
from linkdesk.services.discovery import DiscoveryService
from linkdesk.services.outreach import OutreachService
from linkdesk.services.ratelimit import RateLimiter, RequestBudget
from linkdesk.services.staff_auth import StaffAuth
from linkdesk.services.webhook_apply import WebhookApplier
from linkdesk.services.worker import SyncWorker
from linkdesk.settings import Settings
from linkdesk.store.engine import Store, create_engine, migrate, sqlite_file_path
from linkdesk.store.health_totals import HealthTotals
from linkdesk.store.sync_jobs import JobQueue
from linkdesk.webhooks.receiver import WebhookReceiver
from linkdesk.webhooks.verify import JwksCache, WebhookVerifier

__all__ = [
    "Services",
    "build_services",
    "forget_process_services",
    "process_services",
    "process_services_built",
]


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    client: MoneyKitClient
    totals: HealthTotals  # links per verdict, state and error, moved by every writer
    links: LinkQueries  # the Links list
    link_detail: LinkDetailReads
    activity: ActivityReads  # sessions, audit, sync attempts, relinks in progress
    worker_progress: WorkerProgress
    overview_history: OverviewHistory  # the Overview's reads over history
    overview: OverviewReads  # the Overview's numbers, shared by every session
    funnel: FunnelReads  # the Connect funnel
    timeline: TimelineReads  # one customer's history and open problems
    deliveries: DeliveryReads  # webhook deliveries as received
    sessions: ConnectService
    discovery: DiscoveryService
    audit: AuditLog
    health: HealthThresholds
    jobs: JobQueue
    budget: RequestBudget  # MoneyKit's limits, shared by the worker and the webhook receiver
    webhooks: WebhookReceiver  # receiving: verify, record, queue
    webhook_apply: WebhookApplier  # applying the queue; staff re-apply
    worker: SyncWorker
    customer_links: CustomerLinkService
    demo: DemoService
    outreach: OutreachService
    alerts: AlertService
    alert_runner: AlertRunner
    metrics: Metrics
    staff: StaffAuth
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Release what ``build_services`` created itself (not what the caller passed in)."""
        for closer in reversed(self._closers):
            closer()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build_services(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    http_client: httpx.Client | None = None,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
    client: MoneyKitClient | None = None,
    migrate_schema: bool = True,
    worker_id: str | None = None,
    budget: RequestBudget | None = None,
) -> Services:
    """Build settings, store, MoneyKit client and services.

    ``clock`` returns an aware UTC datetime and drives every timestamp, including the client's
    token expiry. ``migrate_schema`` brings the database to the latest migration (a no-op when it
    is current). ``worker_id`` names this process's worker in claims and history. ``budget``:
    MoneyKit's request limits as another implementation keeps them (bench/sync_worker.py
    compares one); by default the settings' limits in :class:`RequestBudget`.
    """
    settings = settings if settings is not None else Settings()
    # Timers follow the injected clock (tests move time); the real ones use a monotonic clock,
    # which wall-clock adjustments cannot disturb. The rate windows read the wall clock, as the
    # library that keeps them does (services/ratelimit.py).
    monotonic: Callable[[], float] = (
        time.monotonic if clock is None else (lambda: clock().timestamp())  # type: ignore[misc]
    )
    wall: Callable[[], float] = time.time if clock is None else monotonic
    clock = clock or _utcnow
    closers: list[Callable[[], None]] = []

    own_engine = engine is None
    if engine is None:
        path = sqlite_file_path(settings.database_url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.database_url)
    if migrate_schema:
        migrate(engine)
    store = Store(engine)
    if own_engine:
        closers.append(store.dispose)  # after the background counts that read it have ended

    if client is None:
        client = MoneyKitClient(
            client_id=settings.moneykit_client_id,
            client_secret=settings.moneykit_client_secret,
            base_url=settings.moneykit_base_url,
            http_client=http_client,
            max_retries=settings.moneykit_max_retries,
            timeout=settings.moneykit_timeout_seconds if http_client is None else None,
            clock=lambda: clock().timestamp(),
            sleep=sleep,
            image_policy=ImagePolicy.for_moneykit(
                settings.image_hosts,
                base_url=settings.moneykit_base_url,
                connect_host=settings.moneykit_connect_host,
            ),
        )
        closers.append(client.close)

    audit = AuditLog(store, clock=clock)
    health = HealthThresholds.from_settings(settings)
    # One set of shared totals for the pages and for the services that change links, so that a
    # staff action or an applied webhook moves the link between the counts the pages show, and
    # a state the worker reads has them counted again within a second.
    totals = HealthTotals(store, clock=clock, thresholds=health)
    links = LinkQueries(store, clock=clock, thresholds=health, totals=totals)
    activity = ActivityReads(store, clock=clock)
    worker_progress = WorkerProgress(store, clock=clock)
    sessions = ConnectService(
        store=store,
        client=client,
        settings=settings,
        audit=audit,
        clock=clock,
        totals=totals,
        sleep=sleep,
    )
    jobs = JobQueue(store, clock=clock, thresholds=health)
    if budget is None:
        budget = RequestBudget.from_settings(settings, wall=wall)
    # Background reads must not sit in the client's retry sleeps: a 429 or 5xx comes straight
    # back and the job is rescheduled (Retry-After, backoff) while other links go ahead.
    background_client = client.with_options(max_retries=0)
    jwks = JwksCache.for_base_url(
        settings.moneykit_base_url,
        http_client=http_client,
        clock=clock,
        max_age=timedelta(hours=settings.jwks_cache_hours),
        min_refetch=timedelta(seconds=settings.jwks_min_refetch_seconds),
    )
    closers.append(jwks.close)
    verifier = WebhookVerifier(
        jwks,
        clock=clock,
        issuer=settings.webhook_issuer,
        max_age=timedelta(seconds=settings.webhook_max_age_seconds),
        max_skew=timedelta(seconds=settings.webhook_max_skew_seconds),
    )
    webhooks = WebhookReceiver(
        store=store,
        verifier=verifier,
        clock=clock,
        max_body_bytes=settings.webhook_max_body_bytes,
        refused_sample=settings.webhook_refused_sample,
        retention=timedelta(days=settings.webhook_delivery_retention_days),
    )
    webhook_apply = WebhookApplier(
        store=store,
        client=background_client,
        jobs=jobs,
        customer_tag_prefix=settings.customer_tag_prefix,
        clock=clock,
        budget=budget,
        audit=audit,
        # Refusals tallied by this process, and the deliveries' retention, once per pass.
        before_pass=[webhooks.flush_refusals],
        totals=totals,
    )
    metrics = Metrics(
        store=store, totals=totals, clock=clock, db_max_age=settings.metrics_db_max_age_seconds
    )
    client.observers.append(metrics.on_moneykit_request)
    webhooks.delivery_observers.append(metrics.on_webhook_delivery)
    sessions.session_observers.append(metrics.on_connect_session)
    # Alert channels are not MoneyKit: they get a client of their own, never the injected one.
    alerts_http = httpx.Client(timeout=10.0)
    closers.append(alerts_http.close)
    channels = build_channels(settings, alerts_http, lambda: clock().timestamp())
    alerts = AlertService(
        store=store,
        audit=audit,
        clock=clock,
        thresholds=health,
        channels=lambda: set(channels),
    )
    alert_runner = AlertRunner(
        alerts,
        Dispatcher(
            store,
            channels,
            clock=clock,
            dashboard_url=settings.alert_dashboard_url,
            on_delivery=metrics.on_alert_delivery,
        ),
        interval=timedelta(seconds=settings.alerts_evaluate_seconds),
        monotonic=monotonic,
    )
    worker = SyncWorker(
        store=store,
        client=background_client,
        settings=settings,
        audit=audit,
        clock=clock,
        sleep=sleep,
        budget=budget,
        webhook_apply=webhook_apply,
        worker_id=worker_id,
        alerts=alert_runner if settings.alerts_enabled else None,
        on_links_moved=totals.links_moved,
    )
    customer_links = CustomerLinkService(
        store=store,
        sessions=sessions,
        audit=audit,
        settings=settings,
        key=lambda: load_signing_key(settings),
        clock=clock,
        client=client,
    )
    demo = DemoService(
        store=store,
        client=client,
        settings=settings,
        audit=audit,
        # Built on first use: refuses MoneyKit's own hosts before any request is sent.
        controls=lambda: SandboxControls(settings.moneykit_base_url, http_client=http_client),
        clock=clock,
        totals=totals,
    )
    closers.append(demo.close)
    outreach = OutreachService(
        store=store,
        links=links,
        customer_links=customer_links,
        audit=audit,
        settings=settings,
        clock=clock,
        wall=wall,
        monotonic=monotonic,
        sleep=sleep or time.sleep,
    )
    overview_history = OverviewHistory(store, clock=clock, thresholds=health)
    return Services(
        settings=settings,
        store=store,
        client=client,
        totals=totals,
        links=links,
        link_detail=LinkDetailReads(store, clock=clock, thresholds=health, activity=activity),
        activity=activity,
        worker_progress=worker_progress,
        overview_history=overview_history,
        overview=OverviewReads(
            store=store,
            totals=totals,
            worker=worker_progress,
            history=overview_history,
            rollup=StateChangeRollup(store, clock=clock),
            clock=clock,
        ),
        funnel=FunnelReads(store, clock=clock),
        timeline=TimelineReads(store, clock=clock, thresholds=health),
        deliveries=DeliveryReads(store),
        sessions=sessions,
        discovery=DiscoveryService(
            store=store,
            client=client,
            settings=settings,
            audit=audit,
            clock=clock,
            limiter=RateLimiter(
                settings.sync_links_per_minute, wall=wall, sleep=sleep or time.sleep
            ),
            on_links_moved=totals.links_moved,
        ),
        audit=audit,
        health=health,
        jobs=jobs,
        budget=budget,
        webhooks=webhooks,
        webhook_apply=webhook_apply,
        worker=worker,
        customer_links=customer_links,
        demo=demo,
        outreach=outreach,
        alerts=alerts,
        alert_runner=alert_runner,
        metrics=metrics,
        staff=StaffAuth(store, audit, settings, clock=clock),
        _closers=closers,
    )


_process_services: Services | None = None
_process_services_lock = threading.Lock()


def process_services() -> Services:
    """This process's one set of services, built from the environment on first use.

    The server (webhook route, health probe, metrics, worker thread) and the dashboard's pages
    share it, so the process has one store pool, one MoneyKit budget and one worker.
    """
    global _process_services
    services = _process_services
    if services is not None:
        return services
    with _process_services_lock:
        # Another thread may have built them while this one waited for the lock.
        if _process_services is None:
            _process_services = build_services()
            # Everything imported and built so far lives as long as the process: keep it out of
            # the collector's full passes. Measured: a full pass over the ~217,000 objects of a
            # dashboard process took 150 ms, now and then, in the middle of a page's run.
            gc.freeze()
        return _process_services


def prepare_to_serve(services: Services) -> None:
    """What a server does once its services are built, before it serves anyone: import what
    the first page would otherwise import (Streamlit imports pandas the first time a page shows
    a table: half a second) and start counting what the landing page shows."""
    importlib.import_module("pandas")
    services.overview.start_counting()


def process_services_built() -> bool:
    return _process_services is not None


def forget_process_services() -> None:
    """Drop this process's services so the next use builds them again from the environment.

    They are dropped, not closed: a page still drawing may hold them (tests and benchmarks use
    this between runs, as a new deployment would start).
    """
    global _process_services
    with _process_services_lock:
        _process_services = None
