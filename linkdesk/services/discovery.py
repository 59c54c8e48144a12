"""Reconciliation: bring the store in line with every link MoneyKit knows for this application.

Webhooks are retried for only a few hours, so a full pass must be able to catch up whatever was
missed: list all links (cursor pages), read each one with its accounts and institution, store
them and record state changes.

A listing is never proof that a link was deleted: an upstream bug, a proxy or a wrong client id
can answer an empty or partial list. A link is marked deleted only when its own read says so
(state ``deleted`` or 410). Links a listing lacks are read one by one; a listing that lacks more
than a small share of the known links is *suspect*: nothing is written from it, it is audited,
logged as a warning and kept in the ``discovery_suspect`` worker state until a complete listing
clears it. A link stored as deleted that is listed again is read and so restored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa

from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.errors import GoneError, MoneyKitError, NotFoundError
from linkdesk.moneykit.models import LinkListItem
from linkdesk.services.audit import AuditLog
from linkdesk.services.ingest import IngestResult, LinkIngestor
from linkdesk.services.institutions import InstitutionFetcher
from linkdesk.services.ratelimit import RateLimiter
from linkdesk.settings import Settings
from linkdesk.store.engine import Store
from linkdesk.store.models import Link
from linkdesk.store.repository import mark_link_deleted, put_named_state
from linkdesk.store.sync_jobs import PRIORITY_NEW, JobQueue

__all__ = [
    "DISCOVERY_SUSPECT",
    "NOT_FOUND_KEPT",
    "DiscoveryService",
    "ListingPlan",
    "SyncFailure",
    "SyncReport",
    "audit_restored",
    "plan_listing",
    "record_listing_verdict",
]

logger = logging.getLogger("linkdesk.services.discovery")

ProgressCallback = Callable[[int, int], None]

# Named worker state: {} after a complete listing; {"at", "listed", "known", "missing"} while
# the last listing was suspect (alerting raises an alert from it).
DISCOVERY_SUSPECT = "discovery_suspect"
# What a 404 on one link's read leaves behind. MoneyKit answers 410 (or state "deleted") for a
# link it deleted, and keeps deleted links readable for 90 days; a 404 for a link we hold is
# more likely a wrong client id or environment, a proxy or an upstream bug than a deletion, and
# marking it deleted would drop its sync job for good. So it is recorded and read again later.
NOT_FOUND_KEPT = "MoneyKit answered 404 for this link; kept, read again later"


@dataclass(frozen=True, slots=True)
class ListingPlan:
    """What one complete listing of ``GET /links`` means for the store."""

    listed: int
    known: int  # stored links not deleted
    new: list[str]  # listed, never stored
    reappeared: list[str]  # listed, stored as deleted
    missing: list[str]  # stored (not deleted), not listed, not read since the listing began
    suspect: bool  # lacks too many known links: nothing is written from it

    @property
    def summary(self) -> str:
        return (
            f"{self.listed} listed of {self.known} known, {len(self.new)} new, "
            f"{len(self.missing)} missing, {len(self.reappeared)} listed again"
        )


def plan_listing(
    store: Store, listed_ids: set[str], *, started_at: datetime, settings: Settings
) -> ListingPlan:
    """Compare a listing with the store; decide whether it is complete enough to act on."""
    with store.read() as session:
        rows = session.execute(sa.select(Link.link_id, Link.state, Link.last_synced_at)).all()
    live = [row for row in rows if row.state != "deleted"]
    stored = {row.link_id for row in rows}
    deleted = {row.link_id for row in rows if row.state == "deleted"}
    missing = sorted(
        row.link_id
        for row in live
        if row.link_id not in listed_ids
        # Read after the listing began: that read is newer than the list.
        and (row.last_synced_at is None or row.last_synced_at < started_at)
    )
    allowed = max(settings.discovery_suspect_floor, settings.discovery_suspect_share * len(live))
    return ListingPlan(
        listed=len(listed_ids),
        known=len(live),
        new=sorted(listed_ids - stored),
        reappeared=sorted(listed_ids & deleted),
        missing=missing,
        suspect=len(missing) > allowed,
    )


def record_listing_verdict(
    store: Store, plan: ListingPlan, *, now: datetime, audit: AuditLog, actor: str
) -> None:
    """Keep ``discovery_suspect`` current; a suspect listing is also audited and logged."""
    if plan.suspect:
        value: dict[str, object] = {
            "at": now.isoformat(),
            "listed": plan.listed,
            "known": plan.known,
            "missing": len(plan.missing),
        }
        logger.warning("discovery: suspect listing ignored (%s); no link changed", plan.summary)
    else:
        value = {}
    with store.write() as session:
        put_named_state(session, DISCOVERY_SUSPECT, value, now)
    if plan.suspect:
        audit.record(
            actor=actor,
            action="discovery.suspect",
            outcome="refused",
            detail=f"Listing ignored, no link changed: {plan.summary}.",
        )


def audit_restored(audit: AuditLog, result: IngestResult, *, actor: str) -> None:
    if result.upsert.restored:
        audit.record(
            actor=actor,
            action="link.restore",
            outcome="success",
            link_id=result.link.link_id,
            customer_id=result.customer_id,
            detail=f"MoneyKit reads the link again as {result.link.state}; deletion undone.",
        )


@dataclass(frozen=True, slots=True)
class SyncFailure:
    link_id: str
    error: str  # safe to show: never a raw response body


@dataclass(frozen=True, slots=True)
class SyncReport:
    listed: int
    ok: int
    failed: int
    new: int
    deleted: int
    state_changes: int
    institutions_fetched: int
    started_at: datetime
    finished_at: datetime
    failures: list[SyncFailure] = field(default_factory=list)
    restored: int = 0
    suspect: bool = False  # the listing lacked too many known links: nothing was written

    @property
    def summary(self) -> str:
        if self.suspect:
            return (
                f"{self.listed} links listed, far fewer than stored: listing ignored as suspect, "
                "no link changed."
            )
        return (
            f"{self.listed} links listed: {self.ok} ok, {self.failed} failed, {self.new} new, "
            f"{self.deleted} marked deleted, {self.restored} restored, "
            f"{self.state_changes} state changes."
        )


@dataclass(frozen=True, slots=True)
class _LinkOutcome:
    link_id: str
    ok: bool
    new: bool = False
    deleted: bool = False
    restored: bool = False
    state_changed: bool = False
    error: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DiscoveryService:
    def __init__(
        self,
        *,
        store: Store,
        client: MoneyKitClient,
        settings: Settings,
        audit: AuditLog,
        clock: Callable[[], datetime] | None = None,
        concurrency: int | None = None,
        limiter: RateLimiter | None = None,
        on_links_moved: Callable[[], None] | None = None,
    ) -> None:
        """``on_links_moved``: see SyncWorker."""
        self._store = store
        self._on_links_moved = on_links_moved or (lambda: None)
        self._settings = settings
        self._limiter = limiter
        self._client = client
        self._audit = audit
        self._clock = clock or _utcnow
        self._concurrency = max(1, concurrency or settings.sync_concurrency)
        self._ingestor = LinkIngestor(
            store=store,
            client=client,
            customer_tag_prefix=settings.customer_tag_prefix,
            clock=self._clock,
        )

    def _list_all(self) -> list[LinkListItem]:
        unique: dict[str, LinkListItem] = {}
        for item in self._client.iter_links():
            unique.setdefault(item.link_id, item)
        return list(unique.values())

    def _sync_one(
        self, link_id: str, fetcher: InstitutionFetcher, created_at: datetime | None = None
    ) -> _LinkOutcome:
        try:
            if self._limiter is not None:
                self._limiter.acquire()
            fetched_at = self._clock()
            try:
                link = self._client.get_link(link_id)
            except GoneError:
                # MoneyKit says this link was deleted (410): the one answer that deletes it.
                with self._store.write() as session:
                    deleted = mark_link_deleted(session, link_id, now=self._clock(), source="sync")
                if deleted:
                    self._on_links_moved()
                return _LinkOutcome(link_id, ok=True, deleted=deleted, state_changed=deleted)
            except NotFoundError:
                # Not proof of deletion (see NOT_FOUND_KEPT): counted, the link is kept.
                logger.warning("sync: MoneyKit answered 404 for link %s; kept", link_id)
                return _LinkOutcome(link_id, ok=False, error=NOT_FOUND_KEPT)
            result = self._ingestor.ingest(
                link,
                source="sync",
                fetcher=fetcher,
                fetched_at=fetched_at,
                created_at=created_at,
            )
            if result.upsert.moved:
                self._on_links_moved()
            if result.upsert.restored:
                self._restore_job(link_id)
                audit_restored(self._audit, result, actor="sync")
            deleted = result.upsert.state_changed and link.state == "deleted"
            return _LinkOutcome(
                link_id,
                ok=result.accounts_error is None,
                new=result.upsert.created,
                deleted=deleted and not result.upsert.created,
                restored=result.upsert.restored,
                state_changed=result.upsert.state_changed,
                error=(
                    f"accounts: {result.accounts_error}"
                    if result.accounts_error is not None
                    else None
                ),
            )
        except MoneyKitError as exc:
            return _LinkOutcome(link_id, ok=False, error=str(exc))
        except Exception as exc:
            # One bad link must not end the run; the type is enough to investigate in the logs.
            logger.exception("sync of link %s failed", link_id)
            return _LinkOutcome(link_id, ok=False, error=f"internal error ({type(exc).__name__})")

    def _restore_job(self, link_id: str) -> None:
        """A restored link gets its sync job back (deleted links have none)."""
        with self._store.write() as session:
            JobQueue.schedule_link(session, link_id, due_at=self._clock(), priority=PRIORITY_NEW)

    def _read_all(
        self,
        work: list[tuple[str, datetime | None]],
        fetcher: InstitutionFetcher,
        progress: ProgressCallback | None,
    ) -> list[_LinkOutcome]:
        total = len(work)
        if progress is not None:
            progress(0, total)
        outcomes: list[_LinkOutcome] = []
        if self._concurrency == 1 or total <= 1:
            for link_id, created_at in work:
                outcomes.append(self._sync_one(link_id, fetcher, created_at))
                if progress is not None:
                    progress(len(outcomes), total)
            return outcomes
        with ThreadPoolExecutor(
            max_workers=self._concurrency, thread_name_prefix="linkdesk-sync"
        ) as pool:
            futures = [
                pool.submit(self._sync_one, link_id, fetcher, created_at)
                for link_id, created_at in work
            ]
            for future in as_completed(futures):
                outcomes.append(future.result())
                if progress is not None:
                    progress(len(outcomes), total)
        return outcomes

    def sync_all(
        self, progress: ProgressCallback | None = None, *, actor: str = "sync"
    ) -> SyncReport:
        """One full pass. Raises the client's error if the link list itself cannot be read
        (nothing is then changed); a failure on one link is counted and the pass goes on.

        Every listed link is read; so is every stored link the listing lacks (its own read
        decides whether it was deleted). A suspect listing (see :func:`plan_listing`) changes
        nothing and says so in the report.
        """
        started_at = self._clock()
        try:
            items = self._list_all()
        except MoneyKitError as exc:
            self._audit.record(actor=actor, action="sync.run", outcome="failed", detail=str(exc))
            raise
        plan = plan_listing(
            self._store,
            {item.link_id for item in items},
            started_at=started_at,
            settings=self._settings,
        )
        record_listing_verdict(self._store, plan, now=self._clock(), audit=self._audit, actor=actor)
        if plan.suspect:
            report = SyncReport(
                listed=len(items),
                ok=0,
                failed=0,
                new=0,
                deleted=0,
                state_changes=0,
                institutions_fetched=0,
                started_at=started_at,
                finished_at=self._clock(),
                suspect=True,
            )
            self._audit.record(
                actor=actor, action="sync.run", outcome="failed", detail=report.summary
            )
            return report

        work = [(item.link_id, item.created_at) for item in items]
        # Bounded by the suspect threshold: a listing lacking more is not acted on at all.
        work += [(link_id, None) for link_id in plan.missing]
        fetcher = InstitutionFetcher(self._client)
        outcomes = self._read_all(work, fetcher, progress)
        failures = sorted(
            (SyncFailure(o.link_id, o.error or "failed") for o in outcomes if not o.ok),
            key=lambda f: f.link_id,
        )
        report = SyncReport(
            listed=len(items),
            ok=sum(1 for o in outcomes if o.ok),
            failed=len(failures),
            new=sum(1 for o in outcomes if o.new),
            deleted=sum(1 for o in outcomes if o.deleted),
            state_changes=sum(1 for o in outcomes if o.state_changed and not o.new),
            institutions_fetched=fetcher.fetched,
            started_at=started_at,
            finished_at=self._clock(),
            failures=failures,
            restored=sum(1 for o in outcomes if o.restored),
        )
        self._audit.record(
            actor=actor,
            action="sync.run",
            outcome="partial" if report.failed else "success",
            detail=report.summary,
        )
        return report
