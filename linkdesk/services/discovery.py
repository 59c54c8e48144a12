"""Reconciliation: bring the store in line with every link MoneyKit knows for this application.

Webhooks are retried for only a few hours, so a full pass must be able to catch up whatever was
missed: list all links (cursor pages), read each one with its accounts and institution, store
them, record state changes, and mark links that MoneyKit no longer lists as deleted.
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
from linkdesk.services.ingest import LinkIngestor
from linkdesk.services.institutions import InstitutionFetcher
from linkdesk.services.ratelimit import RateLimiter
from linkdesk.settings import Settings
from linkdesk.store.engine import Store
from linkdesk.store.models import Link
from linkdesk.store.repository import mark_link_deleted

__all__ = ["DiscoveryService", "SyncFailure", "SyncReport"]

logger = logging.getLogger("linkdesk.services.discovery")

ProgressCallback = Callable[[int, int], None]


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

    @property
    def summary(self) -> str:
        return (
            f"{self.listed} links listed: {self.ok} ok, {self.failed} failed, {self.new} new, "
            f"{self.deleted} marked deleted, {self.state_changes} state changes."
        )


@dataclass(frozen=True, slots=True)
class _LinkOutcome:
    link_id: str
    ok: bool
    new: bool = False
    deleted: bool = False
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
    ) -> None:
        self._store = store
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

    def _sync_one(self, item: LinkListItem, fetcher: InstitutionFetcher) -> _LinkOutcome:
        link_id = item.link_id
        try:
            if self._limiter is not None:
                self._limiter.acquire()
            fetched_at = self._clock()
            try:
                link = self._client.get_link(link_id)
            except (NotFoundError, GoneError):
                # Listed a moment ago, gone now: deleted in between.
                with self._store.write() as session:
                    deleted = mark_link_deleted(session, link_id, now=self._clock(), source="sync")
                return _LinkOutcome(link_id, ok=True, deleted=deleted, state_changed=deleted)
            result = self._ingestor.ingest(
                link,
                source="sync",
                fetcher=fetcher,
                fetched_at=fetched_at,
                created_at=item.created_at,
            )
            if result.accounts_error is not None:
                return _LinkOutcome(
                    link_id,
                    ok=False,
                    new=result.upsert.created,
                    state_changed=result.upsert.state_changed,
                    error=f"accounts: {result.accounts_error}",
                )
            return _LinkOutcome(
                link_id,
                ok=True,
                new=result.upsert.created,
                state_changed=result.upsert.state_changed,
            )
        except MoneyKitError as exc:
            return _LinkOutcome(link_id, ok=False, error=str(exc))
        except Exception as exc:
            # One bad link must not end the run; the type is enough to investigate in the logs.
            logger.exception("sync of link %s failed", link_id)
            return _LinkOutcome(link_id, ok=False, error=f"internal error ({type(exc).__name__})")

    def _mark_vanished(self, listed_ids: set[str], started_at: datetime) -> int:
        """Mark stored links that MoneyKit no longer lists (and nobody touched since we started)."""
        with self._store.read() as session:
            candidates = session.scalars(
                sa.select(Link.link_id).where(
                    Link.state != "deleted",
                    sa.or_(Link.last_synced_at.is_(None), Link.last_synced_at < started_at),
                )
            ).all()
        vanished = [link_id for link_id in candidates if link_id not in listed_ids]
        deleted = 0
        for start in range(0, len(vanished), 500):
            with self._store.write() as session:
                for link_id in vanished[start : start + 500]:
                    if mark_link_deleted(session, link_id, now=self._clock(), source="sync"):
                        deleted += 1
        return deleted

    def sync_all(
        self, progress: ProgressCallback | None = None, *, actor: str = "sync"
    ) -> SyncReport:
        """One full pass. Raises the client's error if the link list itself cannot be read
        (nothing is then marked deleted); a failure on one link is counted and the pass goes on.
        """
        started_at = self._clock()
        try:
            items = self._list_all()
        except MoneyKitError as exc:
            self._audit.record(actor=actor, action="sync.run", outcome="failed", detail=str(exc))
            raise
        total = len(items)
        if progress is not None:
            progress(0, total)
        fetcher = InstitutionFetcher(self._client)
        outcomes: list[_LinkOutcome] = []
        if self._concurrency == 1 or total <= 1:
            for item in items:
                outcomes.append(self._sync_one(item, fetcher))
                if progress is not None:
                    progress(len(outcomes), total)
        else:
            with ThreadPoolExecutor(
                max_workers=self._concurrency, thread_name_prefix="linkdesk-sync"
            ) as pool:
                futures = [pool.submit(self._sync_one, item, fetcher) for item in items]
                for future in as_completed(futures):
                    outcomes.append(future.result())
                    if progress is not None:
                        progress(len(outcomes), total)

        vanished = self._mark_vanished({item.link_id for item in items}, started_at)
        failures = sorted(
            (SyncFailure(o.link_id, o.error or "failed") for o in outcomes if not o.ok),
            key=lambda f: f.link_id,
        )
        report = SyncReport(
            listed=total,
            ok=sum(1 for o in outcomes if o.ok),
            failed=len(failures),
            new=sum(1 for o in outcomes if o.new),
            deleted=vanished + sum(1 for o in outcomes if o.deleted),
            state_changes=vanished + sum(1 for o in outcomes if o.state_changed and not o.new),
            institutions_fetched=fetcher.fetched,
            started_at=started_at,
            finished_at=self._clock(),
            failures=failures,
        )
        self._audit.record(
            actor=actor,
            action="sync.run",
            outcome="partial" if report.failed else "success",
            detail=report.summary,
        )
        return report
