"""The reconciliation worker's progress and lag, as the worker panel, the Overview, the Demo
stage and the metrics show it: one count for every session of the process (see
linkdesk.store.shared)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from linkdesk.store.engine import Store
from linkdesk.store.models import SyncAttempt, SyncJob, WebhookEvent, WorkerState
from linkdesk.store.shared import SharedResult

__all__ = ["WorkerProgress", "WorkerStatus"]


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """Progress and lag of the reconciliation worker, for the dashboard."""

    now: datetime
    last_run_at: datetime | None
    last_run_by: str | None
    paused: bool
    jobs_total: int
    jobs_due: int
    jobs_claimed: int
    oldest_due_at: datetime | None
    links_synced_last_hour: int
    errors_last_hour: int
    rate_limited_last_hour: int
    last_error: str | None
    last_discovery_at: datetime | None
    webhooks_pending: int
    # {} or None: the last listing was complete; else {"at", "listed", "known", "missing"}.
    discovery_suspect: dict[str, Any] | None = None

    @property
    def lag(self) -> timedelta:
        """How long the most overdue job has been waiting (zero when nothing is due)."""
        if self.oldest_due_at is None:
            return timedelta(0)
        return max(self.now - self.oldest_due_at, timedelta(0))


class WorkerProgress:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))
        self._shared = SharedResult(self._count, monotonic=monotonic)

    def status(self, *, max_age: float = 0.0) -> WorkerStatus:
        """The worker's progress; a count this process made at most ``max_age`` seconds ago is
        reused for any caller (0, the default, counts now)."""
        return self._shared.get(max_age)

    def _count(self) -> WorkerStatus:
        now = self._clock()
        hour_ago = now - timedelta(hours=1)
        free = sa.or_(SyncJob.claimed_until.is_(None), SyncJob.claimed_until < now)
        with self._store.read() as session:
            total = session.scalar(sa.select(sa.func.count()).select_from(SyncJob)) or 0
            due, oldest = session.execute(
                sa.select(sa.func.count(), sa.func.min(SyncJob.due_at)).where(
                    SyncJob.due_at <= now, free
                )
            ).one()
            claimed = session.scalar(sa.select(sa.func.count()).where(SyncJob.claimed_until >= now))
            recent = dict(
                session.execute(
                    sa.select(SyncAttempt.outcome, sa.func.count())
                    .where(SyncAttempt.at >= hour_ago, SyncAttempt.kind == "link")
                    .group_by(SyncAttempt.outcome)
                ).all()
            )
            synced = session.scalar(
                sa.select(sa.func.count(sa.distinct(SyncAttempt.link_id))).where(
                    SyncAttempt.at >= hour_ago,
                    SyncAttempt.kind == "link",
                    SyncAttempt.outcome.in_(["ok", "deleted"]),
                )
            )
            last_error = session.scalar(
                sa.select(SyncAttempt.error)
                .where(SyncAttempt.outcome == "error")
                .order_by(SyncAttempt.at.desc(), SyncAttempt.id.desc())
                .limit(1)
            )
            discovery = session.get(SyncJob, "discovery")
            last_run = session.get(WorkerState, "last_run")
            paused = session.get(WorkerState, "paused")
            suspect = session.get(WorkerState, "discovery_suspect")
            pending = session.scalar(
                sa.select(sa.func.count()).where(WebhookEvent.status == "pending")
            )
            last_run_value = dict(last_run.value or {}) if last_run is not None else {}
        oldest_due: Any = oldest
        if isinstance(oldest_due, str):
            oldest_due = datetime.fromisoformat(oldest_due)
        if isinstance(oldest_due, datetime) and oldest_due.tzinfo is None:
            oldest_due = oldest_due.replace(tzinfo=UTC)
        return WorkerStatus(
            now=now,
            last_run_at=last_run.updated_at if last_run is not None else None,
            last_run_by=last_run_value.get("worker") if last_run_value else None,
            paused=bool(paused is not None and (paused.value or {}).get("paused")),
            jobs_total=int(total),
            jobs_due=int(due or 0),
            jobs_claimed=int(claimed or 0),
            oldest_due_at=oldest_due,
            links_synced_last_hour=int(synced or 0),
            errors_last_hour=int(recent.get("error", 0)),
            rate_limited_last_hour=int(recent.get("rate_limited", 0)),
            last_error=last_error,
            last_discovery_at=discovery.last_success_at if discovery is not None else None,
            webhooks_pending=int(pending or 0),
            discovery_suspect=dict(suspect.value or {}) if suspect is not None else None,
        )
