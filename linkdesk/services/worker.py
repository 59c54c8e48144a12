"""The reconciliation worker: keeps every stored link close to MoneyKit's truth.

Webhooks say *that* something changed, but MoneyKit retries them for only about two hours, so the
worker also reads every link on a schedule. Each round it

1. applies queued webhook events (when an applier is wired in);
2. gives every stored link a job in ``sync_jobs`` (see :mod:`linkdesk.store.sync_jobs`);
3. runs discovery (``GET /links``) when its own interval is due: new links get a job, links
   listed again after being deleted are read (and so restored), links the listing lacks are read
   one by one within the budget, and only their own read can mark them deleted; a listing that
   lacks too many known links is suspect and changes nothing (see
   :mod:`linkdesk.services.discovery`);
4. claims the most urgent due link jobs (webhook > admin trigger > new > unhealthy > routine) and
   reads them with bounded concurrency, inside MoneyKit's per-link and per-app limits.

It claims no more jobs than the app-wide request budget has room for right now. When the budget is
spent, due jobs stay in the queue untouched (their lag shows the backlog) and the worker pauses
until a slot frees, instead of claiming jobs only to hand them back.

A 429 moves only that link's job to when MoneyKit said to come back; 5xx and network errors back
off exponentially per link. No job waits for a limit inside its run.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from linkdesk.alerts.runner import AlertRunner
from linkdesk.auth import Actor, Permission, require
from linkdesk.health import Health, HealthThresholds, assess_link
from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.errors import GoneError, MoneyKitError, NotFoundError, RateLimitError
from linkdesk.read.worker import WorkerProgress, WorkerStatus
from linkdesk.services.audit import AuditLog
from linkdesk.services.discovery import (
    NOT_FOUND_KEPT,
    audit_restored,
    plan_listing,
    record_listing_verdict,
)
from linkdesk.services.ingest import IngestResult, LinkIngestor
from linkdesk.services.institutions import InstitutionFetcher
from linkdesk.services.ratelimit import RequestBudget
from linkdesk.services.webhook_apply import ApplyReport, WebhookApplier
from linkdesk.settings import Settings
from linkdesk.store.engine import Store
from linkdesk.store.models import Link, SyncAttempt, WorkerState
from linkdesk.store.repository import mark_link_deleted, put_named_state
from linkdesk.store.sync_jobs import (
    PRIORITY_NEW,
    PRIORITY_ROUTINE,
    PRIORITY_TRIGGERED,
    PRIORITY_UNHEALTHY,
    ClaimedJob,
    JobQueue,
)

__all__ = ["RoundReport", "SyncWorker"]

logger = logging.getLogger("linkdesk.worker")

BACKOFF_BASE = timedelta(seconds=30)
DEFAULT_RETRY_AFTER = timedelta(seconds=60)
ENSURE_JOBS_EVERY = timedelta(minutes=1)
FETCHER_LIFETIME = timedelta(hours=1)
# Shortest pause while the request budget is spent: slots free one by one as calls leave the
# window, and waking for each would make rounds of one job.
BUDGET_PAUSE_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class RoundReport:
    claimed: int = 0
    ok: int = 0
    errors: int = 0
    rate_limited: int = 0
    deferred: int = 0
    deleted: int = 0
    discovery: str | None = None  # None: not due; else "ok: …" or "error: …"
    webhooks: ApplyReport | None = None
    paused: bool = False
    # Set when the request budget, not the queue, limited this round: seconds until the budget
    # has room again (0.0: it has room now).
    budget_wait: float | None = None

    @property
    def summary(self) -> str:
        parts = [
            f"{self.claimed} jobs",
            f"{self.ok} ok",
            f"{self.errors} errors",
            f"{self.rate_limited} rate-limited",
            f"{self.deferred} deferred",
        ]
        if self.deleted:
            parts.append(f"{self.deleted} deleted")
        if self.webhooks is not None and (self.webhooks.applied or self.webhooks.stale_ignored):
            parts.append(
                f"webhooks {self.webhooks.applied} applied/{self.webhooks.stale_ignored} stale"
            )
        if self.discovery:
            parts.append(f"discovery {self.discovery}")
        return ("paused; " if self.paused else "") + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class _JobResult:
    outcome: str  # ok | error | rate_limited | deferred | deleted


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SyncWorker:
    def __init__(
        self,
        *,
        store: Store,
        client: MoneyKitClient,
        settings: Settings,
        audit: AuditLog,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        budget: RequestBudget | None = None,
        webhook_apply: WebhookApplier | None = None,
        worker_id: str | None = None,
        concurrency: int | None = None,
        alerts: AlertRunner | None = None,
        on_links_moved: Callable[[], None] | None = None,
    ) -> None:
        """``on_links_moved``: called after a write that moved a link between the shared totals'
        counts (HealthTotals.links_moved), so that the pages' totals follow within a second."""
        self._store = store
        self._on_links_moved = on_links_moved or (lambda: None)
        self._client = client
        self._settings = settings
        self._audit = audit
        self._clock = clock or _utcnow
        self._sleep = sleep
        self._budget = budget or RequestBudget.from_settings(settings)
        self._webhook_apply = webhook_apply
        self._alerts = alerts
        self.worker_id = worker_id or f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:6]}"
        self._concurrency = max(1, concurrency or settings.sync_concurrency)
        self._jobs = JobQueue(
            store, clock=self._clock, thresholds=HealthThresholds.from_settings(settings)
        )
        self._progress = WorkerProgress(store, clock=self._clock)
        self._ingestor = LinkIngestor(
            store=store,
            client=client,
            customer_tag_prefix=settings.customer_tag_prefix,
            clock=self._clock,
        )
        self._lease = timedelta(seconds=settings.worker_claim_seconds)
        self._interval = timedelta(minutes=settings.worker_link_interval_minutes)
        self._unhealthy_interval = timedelta(minutes=settings.worker_unhealthy_interval_minutes)
        self._discovery_interval = timedelta(minutes=settings.worker_discovery_interval_minutes)
        self._max_backoff = timedelta(minutes=settings.worker_max_backoff_minutes)
        self._thresholds = HealthThresholds.from_settings(settings)
        self._fetcher = InstitutionFetcher(client)
        self._fetcher_since = self._clock()
        self._jobs_ensured_at: datetime | None = None

    @property
    def jobs(self) -> JobQueue:
        return self._jobs

    # -- controls (admin) ------------------------------------------------------------------------

    def _set_state(self, name: str, value: dict[str, object]) -> None:
        with self._store.write() as session:
            put_named_state(session, name, value, self._clock())

    def is_paused(self) -> bool:
        with self._store.read() as session:
            row = session.get(WorkerState, "paused")
            return bool(row is not None and (row.value or {}).get("paused"))

    def pause(self, actor: Actor, *, reason: str | None = None) -> None:
        require(actor, Permission.WORKER_CONTROL)
        self._set_state("paused", {"paused": True, "by": actor.name})
        self._audit.record(actor=actor, action="worker.pause", outcome="success", reason=reason)

    def resume(self, actor: Actor, *, reason: str | None = None) -> None:
        require(actor, Permission.WORKER_CONTROL)
        self._set_state("paused", {"paused": False, "by": actor.name})
        self._audit.record(actor=actor, action="worker.resume", outcome="success", reason=reason)

    def trigger_sync(
        self, actor: Actor, *, link_id: str | None = None, reason: str | None = None
    ) -> int:
        """Make one link (or every link) due now, ahead of routine work. Returns jobs touched."""
        require(actor, Permission.SYNC_TRIGGER)
        if link_id is not None:
            self._jobs.request(link_id, priority=PRIORITY_TRIGGERED)
            touched = 1
        else:
            touched = self._jobs.request_all(priority=PRIORITY_TRIGGERED)
        self._audit.record(
            actor=actor,
            action="sync.trigger",
            outcome="success",
            link_id=link_id,
            detail=f"{touched} link(s) due now",
            reason=reason,
        )
        return touched

    def status(self) -> WorkerStatus:
        return self._progress.status()

    # -- one round ---------------------------------------------------------------------------

    def run_once(self) -> RoundReport:
        if self.is_paused():
            self._set_state("last_run", {"worker": self.worker_id, "paused": True})
            self._evaluate_alerts()
            return RoundReport(paused=True)
        webhooks = (
            self._webhook_apply.apply_pending(worker=self.worker_id)
            if self._webhook_apply
            else None
        )
        now = self._clock()
        if now - self._fetcher_since > FETCHER_LIFETIME:
            # Institutions rarely change; re-read them (and their images, if changed) hourly.
            self._fetcher = InstitutionFetcher(self._client)
            self._fetcher_since = now
        if self._jobs_ensured_at is None or now - self._jobs_ensured_at >= ENSURE_JOBS_EVERY:
            self._jobs.ensure_jobs()
            self._jobs_ensured_at = now

        discovery = None
        due_discovery = self._jobs.claim(
            self.worker_id, limit=1, lease=self._lease, kinds=("discovery",)
        )
        for job in due_discovery:
            discovery = self._run_discovery(job)
            self._jobs.ensure_jobs()

        # Claim only what the budget can read now: a job claimed past it would just be handed
        # back, two writes for nothing, and rounds would spin on those while the budget is spent.
        batch = self._settings.worker_batch_size
        room, _wait = self._budget.room("link")
        limit = min(batch, room)
        claimed = (
            self._jobs.claim(self.worker_id, limit=limit, lease=self._lease) if limit > 0 else []
        )
        if self._concurrency == 1 or len(claimed) <= 1:
            results = [self._run_link_job(job) for job in claimed]
        else:
            with ThreadPoolExecutor(
                max_workers=self._concurrency, thread_name_prefix="linkdesk-worker"
            ) as pool:
                results = list(pool.map(self._run_link_job, claimed))
        count = {name: 0 for name in ("ok", "error", "rate_limited", "deferred", "deleted")}
        for result in results:
            count[result.outcome] += 1
        budget_wait = None
        if limit < batch and len(claimed) == limit:
            # Held back by the budget with more (perhaps) due: say when to come back.
            budget_wait = self._budget.room("link")[1]
        report = RoundReport(
            claimed=len(claimed),
            ok=count["ok"],
            errors=count["error"],
            rate_limited=count["rate_limited"],
            deferred=count["deferred"],
            deleted=count["deleted"],
            discovery=discovery,
            webhooks=webhooks,
            budget_wait=budget_wait,
        )
        self._set_state(
            "last_run",
            {"worker": self.worker_id, "claimed": report.claimed, "errors": report.errors},
        )
        self._evaluate_alerts()
        return report

    def _evaluate_alerts(self) -> None:
        # On its own interval, a few indexed reads; delivery happens in the alert thread.
        if self._alerts is not None:
            self._alerts.tick()

    def run_forever(
        self,
        stop_event: threading.Event,
        *,
        on_round: Callable[[RoundReport], None] | None = None,
    ) -> None:
        """Run rounds until ``stop_event`` is set; a failing round is logged and retried.

        Alert notifications are sent by a thread of their own, started and stopped with this
        loop, so a slow channel never delays a round.
        """
        if self._alerts is not None:
            self._alerts.start()
        try:
            self._run_rounds(stop_event, on_round)
        finally:
            if self._alerts is not None:
                self._alerts.stop()

    def _run_rounds(
        self,
        stop_event: threading.Event,
        on_round: Callable[[RoundReport], None] | None,
    ) -> None:
        poll = self._settings.worker_poll_seconds
        while not stop_event.is_set():
            idle = poll
            try:
                report = self.run_once()
                if on_round is not None:
                    on_round(report)
                # A full batch means more is probably due: go again at once.
                if report.claimed >= self._settings.worker_batch_size:
                    idle = 0.0
                elif report.budget_wait is not None:
                    # More is due but the budget is spent: come back when it has room.
                    idle = min(poll, max(report.budget_wait, BUDGET_PAUSE_SECONDS))
            except Exception as exc:
                logger.exception("worker round failed (%s)", type(exc).__name__)
            if idle > 0:
                if self._sleep is not None:
                    self._sleep(idle)
                else:
                    stop_event.wait(idle)

    # -- jobs ------------------------------------------------------------------------------------

    def _record_attempt(
        self, link_id: str | None, kind: str, outcome: str, error: str | None, started: float
    ) -> None:
        with self._store.write() as session:
            session.add(
                SyncAttempt(
                    link_id=link_id,
                    kind=kind,
                    at=self._clock(),
                    outcome=outcome,
                    error=(error or "")[:500] or None,
                    duration_ms=int((time.monotonic() - started) * 1000),
                    worker=self.worker_id[:100],
                )
            )

    def _backoff(self, attempts: int) -> timedelta:
        exponent = min(attempts, 16)
        return min(BACKOFF_BASE * (2**exponent), self._max_backoff)

    def _next_run(self, link_id: str) -> tuple[timedelta, int]:
        """Interval and priority for the link's next read, from its stored health."""
        with self._store.read() as session:
            row = session.get(Link, link_id)
            if row is None:
                return self._interval, PRIORITY_ROUTINE
            verdict = assess_link(row, now=self._clock(), thresholds=self._thresholds)
        if verdict.health in (Health.HEALTHY, Health.DELETED):
            return self._interval, PRIORITY_ROUTINE
        return self._unhealthy_interval, PRIORITY_UNHEALTHY

    def _run_link_job(self, job: ClaimedJob) -> _JobResult:
        assert job.link_id is not None
        link_id = job.link_id
        started = time.monotonic()
        wait = self._budget.try_acquire("link", link_id)
        if wait > 0:
            # Out of budget: hand the job back for when a slot frees, without counting a failure.
            self._jobs.finish(
                job,
                due_at=self._clock() + timedelta(seconds=wait),
                priority=job.priority,
                ok=False,
                count_attempt=False,
                error=None,
            )
            return _JobResult("deferred")
        try:
            outcome, result = self._read_link(link_id)
        except RateLimitError as exc:
            delay = timedelta(seconds=exc.retry_after) if exc.retry_after else DEFAULT_RETRY_AFTER
            self._jobs.finish(
                job,
                due_at=self._clock() + delay,
                priority=job.priority,
                ok=False,
                count_attempt=False,
                error=str(exc),
            )
            self._record_attempt(link_id, "link", "rate_limited", str(exc), started)
            return _JobResult("rate_limited")
        except MoneyKitError as exc:
            self._jobs.finish(
                job,
                due_at=self._clock() + self._backoff(job.attempts),
                priority=job.priority,
                ok=False,
                error=str(exc),
            )
            self._record_attempt(link_id, "link", "error", str(exc), started)
            return _JobResult("error")
        except Exception as exc:
            logger.exception("worker: link %s failed", link_id)
            error = f"internal error ({type(exc).__name__})"
            self._jobs.finish(
                job,
                due_at=self._clock() + self._backoff(job.attempts),
                priority=job.priority,
                ok=False,
                error=error,
            )
            self._record_attempt(link_id, "link", "error", error, started)
            return _JobResult("error")

        if outcome == "deleted":
            self._jobs.finish(job, due_at=None, priority=job.priority, ok=True)
            self._record_attempt(link_id, "link", "deleted", None, started)
            return _JobResult("deleted")
        if outcome == "not_found":
            self._jobs.finish(
                job,
                due_at=self._clock() + self._backoff(job.attempts),
                priority=job.priority,
                ok=False,
                error=NOT_FOUND_KEPT,
            )
            self._record_attempt(link_id, "link", "not_found", NOT_FOUND_KEPT, started)
            return _JobResult("error")
        assert result is not None
        interval, priority = self._next_run(link_id)
        note = None
        if isinstance(result.accounts_error, RateLimitError):
            retry = result.accounts_error.retry_after or DEFAULT_RETRY_AFTER.total_seconds()
            interval = min(interval, timedelta(seconds=retry))
            note = f"accounts: {result.accounts_error}"
        elif result.accounts_error is not None:
            note = f"accounts: {result.accounts_error}"
        self._jobs.finish(
            job, due_at=self._clock() + interval, priority=priority, ok=True, error=note
        )
        self._record_attempt(link_id, "link", "ok", note, started)
        return _JobResult("ok")

    def _read_link(self, link_id: str) -> tuple[str, IngestResult | None]:
        """Read one link and store what MoneyKit says: ``("ok", result)``, ``("deleted", …)``
        when MoneyKit says it was deleted (state ``deleted`` or 410), or ``("not_found", None)``
        on a 404, which changes nothing (see ``NOT_FOUND_KEPT``). Other errors are raised.
        """
        fetched_at = self._clock()
        try:
            link = self._client.get_link(link_id)
        except GoneError:
            with self._store.write() as session:
                deleted = mark_link_deleted(session, link_id, now=self._clock(), source="sync")
            if deleted:
                self._on_links_moved()
            return "deleted", None
        except NotFoundError:
            logger.warning("worker: MoneyKit answered 404 for link %s; kept", link_id)
            return "not_found", None
        read_accounts = link.state == "connected" and (
            self._budget.try_acquire("accounts", link_id) == 0
        )
        result = self._ingestor.ingest(
            link,
            source="sync",
            fetcher=self._fetcher,
            fetched_at=fetched_at,
            read_accounts=read_accounts,
        )
        if result.upsert.moved:
            self._on_links_moved()
        if result.upsert.restored:
            audit_restored(self._audit, result, actor="sync")
        return ("deleted" if link.state == "deleted" else "ok"), result

    def _check_unlisted(self, link_ids: list[str], *, reappeared: bool) -> dict[str, int]:
        """Read links whose listing status changed, within the budget.

        ``reappeared``: stored as deleted and listed again; a read that finds them alive
        restores them (their job comes back with the next ``ensure_jobs``). Otherwise: stored
        and not listed; only their own read may delete them. A link the budget has no room for
        now is left to its job (brought forward) or, when it has none, to the next discovery.
        """
        counts = {"deleted": 0, "restored": 0, "kept": 0, "later": 0}
        for link_id in link_ids:
            started = time.monotonic()
            wait = self._budget.try_acquire("link", link_id)
            if wait > 0:
                counts["later"] += 1
                if not reappeared:
                    self._jobs.request(
                        link_id,
                        priority=PRIORITY_NEW,
                        due_at=self._clock() + timedelta(seconds=wait),
                    )
                continue
            try:
                outcome, result = self._read_link(link_id)
            except Exception as exc:
                # Its own job (or the next discovery) tries again; nothing was changed.
                counts["later"] += 1
                error = str(exc) if isinstance(exc, MoneyKitError) else type(exc).__name__
                self._record_attempt(link_id, "link", "error", error, started)
                if not reappeared:
                    self._jobs.request(link_id, priority=PRIORITY_NEW)
                continue
            if outcome == "deleted":
                counts["deleted"] += 1
            elif result is not None and result.upsert.restored:
                counts["restored"] += 1
            else:
                counts["kept"] += 1
            self._record_attempt(
                link_id,
                "link",
                outcome,
                NOT_FOUND_KEPT if outcome == "not_found" else None,
                started,
            )
        return counts

    def _run_discovery(self, job: ClaimedJob) -> str:
        started = time.monotonic()
        started_at = self._clock()
        listed: list[str] = []
        try:
            cursor: str | None = None
            while True:
                wait = self._budget.try_acquire("list")
                while wait > 0:
                    # Pages are few (500+ links each); waiting here is cheaper than restarting.
                    (self._sleep or time.sleep)(min(wait, 5.0))
                    wait = self._budget.try_acquire("list")
                page = self._client.list_links(cursor=cursor)
                listed.extend(item.link_id for item in page.links)
                cursor = page.next_cursor
                if not cursor:
                    break
        except MoneyKitError as exc:
            retry = (
                timedelta(seconds=exc.retry_after)
                if isinstance(exc, RateLimitError) and exc.retry_after
                else self._backoff(job.attempts)
            )
            self._jobs.finish(
                job,
                due_at=self._clock() + retry,
                priority=job.priority,
                ok=False,
                error=str(exc),
            )
            self._record_attempt(None, "discovery", "error", str(exc), started)
            return f"error: {exc}"

        plan = plan_listing(
            self._store, set(listed), started_at=started_at, settings=self._settings
        )
        record_listing_verdict(
            self._store, plan, now=self._clock(), audit=self._audit, actor="worker"
        )
        if plan.suspect:
            # Nothing from this listing is trusted: no job, no read, no deletion. The next
            # discovery comes at the usual interval; the alert stays until one is complete.
            self._jobs.finish(
                job,
                due_at=self._clock() + self._discovery_interval,
                priority=job.priority,
                ok=False,
                error=f"suspect listing: {plan.summary}",
            )
            self._record_attempt(None, "discovery", "suspect", plan.summary, started)
            return f"suspect: {plan.summary}; nothing changed"
        now = self._clock()
        with self._store.write() as session:
            for link_id in plan.new:
                JobQueue.schedule_link(session, link_id, due_at=now, priority=PRIORITY_NEW)
        back = self._check_unlisted(plan.reappeared, reappeared=True)
        gone = self._check_unlisted(plan.missing, reappeared=False)
        self._jobs.finish(
            job, due_at=self._clock() + self._discovery_interval, priority=job.priority, ok=True
        )
        summary = (
            f"ok: {plan.listed} listed, {len(plan.new)} new, {gone['deleted']} deleted, "
            f"{back['restored']} restored"
        )
        if plan.missing:
            summary += (
                f", {len(plan.missing)} not listed ({gone['kept']} kept, {gone['later']} to read)"
            )
        self._record_attempt(None, "discovery", "ok", None, started)
        logger.info("discovery %s", summary)
        return summary
