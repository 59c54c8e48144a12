"""The worker's durable job queue (table ``sync_jobs``), and its only writer.

One row per link (``link:<id>``) plus one ``discovery`` row. A job is *claimed* by one conditional
UPDATE that only succeeds while nobody holds an unexpired claim, so two workers (threads or
processes, SQLite or PostgreSQL) never run the same job at once. A claim is a lease: a worker
that dies mid-job simply stops renewing it and another worker retakes the job once
``claimed_until`` has passed. Finishing is fenced by the claim token, so a worker that lost its
lease cannot overwrite the schedule written by the worker that took over.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from linkdesk.health import (
    RELINK_ERRORS,
    STUCK_STATES,
    WAIT_ERRORS,
    Health,
    HealthThresholds,
    health_condition_at,
)
from linkdesk.store.engine import Store
from linkdesk.store.models import Link, SyncJob
from linkdesk.store.repository import insert_if_absent

__all__ = [
    "DISCOVERY_JOB",
    "PRIORITY_NEW",
    "PRIORITY_ROUTINE",
    "PRIORITY_TRIGGERED",
    "PRIORITY_UNHEALTHY",
    "PRIORITY_WEBHOOK",
    "ClaimedJob",
    "JobQueue",
    "link_job_id",
]

DISCOVERY_JOB = "discovery"
# Higher runs first among due jobs.
PRIORITY_WEBHOOK = 100  # MoneyKit told us something changed
PRIORITY_TRIGGERED = 90  # an admin asked for it
PRIORITY_NEW = 80  # found by discovery, never read
PRIORITY_UNHEALTHY = 50  # error, stuck or stale: staff are waiting for news
PRIORITY_ROUTINE = 0


def link_job_id(link_id: str) -> str:
    return f"link:{link_id}"


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: str
    kind: str
    link_id: str | None
    attempts: int
    priority: int
    claim: str  # the token written to claimed_by; finishing requires it


def _unhealthy_condition() -> sa.ColumnElement[bool]:
    return sa.or_(
        Link.state.in_(sorted(STUCK_STATES)),
        sa.and_(Link.state == "error", Link.error_code.in_(sorted(RELINK_ERRORS | WAIT_ERRORS))),
        sa.and_(Link.state == "error", Link.error_code.is_(None)),
    )


class JobQueue:
    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime],
        thresholds: HealthThresholds | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._thresholds = thresholds or HealthThresholds()

    # -- scheduling ------------------------------------------------------------------------------

    @staticmethod
    def schedule_link(session: Session, link_id: str, *, due_at: datetime, priority: int) -> None:
        """Make sure ``link_id`` is read no later than ``due_at`` (inside the caller's transaction).

        Only ever brings a job forward and raises its priority; a claimed job keeps its claim
        (the new due time applies after the current run reschedules… unless it is sooner).
        """
        job_id = link_job_id(link_id)
        # Locked: the new due time and priority are worked out from the stored ones.
        job = session.get(SyncJob, job_id, with_for_update=True)
        if job is None:
            values = {
                "id": job_id,
                "kind": "link",
                "link_id": link_id,
                "due_at": due_at,
                "priority": priority,
                "attempts": 0,
                "created_at": due_at,
            }
            if insert_if_absent(session, SyncJob, values, ["id"]):
                return
            # Another process created the job a moment ago; bring that one forward instead.
            job = session.get(SyncJob, job_id, with_for_update=True)
            if job is None:  # pragma: no cover - removed again in between
                return
        claimed = job.claimed_until is not None and job.claimed_until >= due_at
        if claimed and job.last_run_at is not None:
            # The job is running: its due time is <= the claim time and the run will reschedule
            # it. Mark the request by a due time after the claim; finish() keeps the sooner one.
            job.due_at = max(due_at, job.last_run_at + timedelta(milliseconds=1))
        elif due_at < job.due_at:
            job.due_at = due_at
        job.priority = max(job.priority, priority)

    def request(self, link_id: str, *, priority: int, due_at: datetime | None = None) -> None:
        with self._store.write() as session:
            self.schedule_link(session, link_id, due_at=due_at or self._clock(), priority=priority)

    def request_all(self, *, priority: int) -> int:
        """Make every non-deleted link due now (an admin's "sync everything"). Idempotent: a
        job already due at this priority or higher keeps its place in the queue, so asking
        twice while the first request is still queued touches nothing the second time."""
        now = self._clock()
        self.ensure_jobs()
        higher = (
            sa.func.max(SyncJob.priority, priority)
            if self._store.dialect == "sqlite"
            else sa.func.greatest(SyncJob.priority, priority)
        )
        with self._store.write() as session:
            result = session.execute(
                sa.update(SyncJob)
                .where(
                    SyncJob.kind == "link",
                    sa.or_(SyncJob.due_at > now, SyncJob.priority < priority),
                )
                .values(
                    # A job due earlier keeps its earlier time: it only moves up in priority.
                    due_at=sa.case(
                        (SyncJob.due_at < now, SyncJob.due_at),
                        else_=sa.literal(now, SyncJob.due_at.type),
                    ),
                    priority=higher,
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def ensure_jobs(self) -> int:
        """Give every stored, non-deleted link a job, and drop jobs of deleted links.

        New jobs are due now; links that look unhealthy or stale come first. Returns how many
        jobs were added.
        """
        now = self._clock()
        looks_bad = sa.or_(
            _unhealthy_condition(), health_condition_at(Health.STALE, now, self._thresholds)
        )
        priority = sa.case((looks_bad, PRIORITY_UNHEALTHY), else_=PRIORITY_ROUTINE)
        missing = (
            sa.select(
                sa.literal("link:") + Link.link_id,
                sa.literal("link"),
                Link.link_id,
                sa.literal(now, SyncJob.due_at.type),
                priority,
                sa.literal(0),
                sa.literal(now, SyncJob.created_at.type),
            )
            .where(Link.state != "deleted")
            .where(~sa.exists().where(SyncJob.id == sa.literal("link:") + Link.link_id))
        )
        insert = sqlite.insert if self._store.dialect == "sqlite" else postgresql.insert
        with self._store.write() as session:
            # ON CONFLICT: on PostgreSQL two workers may run this at once; the NOT EXISTS above
            # cannot see the other's uncommitted rows.
            added = session.execute(
                insert(SyncJob)
                .from_select(
                    ["id", "kind", "link_id", "due_at", "priority", "attempts", "created_at"],
                    missing,
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
            deleted_links = sa.select(Link.link_id).where(Link.state == "deleted")
            session.execute(
                sa.delete(SyncJob).where(
                    SyncJob.kind == "link",
                    SyncJob.link_id.in_(deleted_links),
                    sa.or_(SyncJob.claimed_until.is_(None), SyncJob.claimed_until < now),
                )
            )
            if session.get(SyncJob, DISCOVERY_JOB) is None:
                discovery = {
                    "id": DISCOVERY_JOB,
                    "kind": "discovery",
                    "link_id": None,
                    "due_at": now,
                    "priority": PRIORITY_ROUTINE,
                    "attempts": 0,
                    "created_at": now,
                }
                insert_if_absent(session, SyncJob, discovery, ["id"])
            return int(added.rowcount or 0)  # type: ignore[attr-defined]

    # -- claiming --------------------------------------------------------------------------------

    def claim(
        self,
        worker: str,
        *,
        limit: int,
        lease: timedelta,
        kinds: Sequence[str] = ("link",),
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` due jobs, most urgent first; each only if nobody holds it."""
        now = self._clock()
        token = f"{worker[:80]}:{uuid.uuid4().hex[:12]}"
        free = sa.or_(SyncJob.claimed_until.is_(None), SyncJob.claimed_until < now)
        candidates = (
            sa.select(SyncJob.id)
            .where(SyncJob.due_at <= now, SyncJob.kind.in_(list(kinds)), free)
            .order_by(SyncJob.priority.desc(), SyncJob.due_at.asc(), SyncJob.id.asc())
            .limit(max(1, limit))
        )
        if self._store.dialect == "postgresql":
            # Other workers skip the rows this one is looking at instead of queueing behind it.
            candidates = candidates.with_for_update(skip_locked=True)
        claimed: list[ClaimedJob] = []
        with self._store.write() as session:
            for job_id in session.scalars(candidates).all():
                won = session.execute(
                    sa.update(SyncJob)
                    .where(SyncJob.id == job_id, SyncJob.due_at <= now, free)
                    .values(claimed_by=token, claimed_until=now + lease, last_run_at=now)
                )
                if won.rowcount != 1:  # type: ignore[attr-defined]
                    continue
                job = session.get(SyncJob, job_id)
                if job is None:  # pragma: no cover - removed between the two statements
                    continue
                claimed.append(
                    ClaimedJob(
                        id=job.id,
                        kind=job.kind,
                        link_id=job.link_id,
                        attempts=job.attempts,
                        priority=job.priority,
                        claim=token,
                    )
                )
        return claimed

    def finish(
        self,
        job: ClaimedJob,
        *,
        due_at: datetime | None,
        priority: int,
        ok: bool,
        error: str | None = None,
        count_attempt: bool = True,
    ) -> bool:
        """Release the claim and schedule the next run (``due_at=None`` removes the job).

        Returns False when the claim had expired and another worker owns the job now; nothing
        is changed then.
        """
        now = self._clock()
        with self._store.write() as session:
            query = sa.select(SyncJob).where(SyncJob.id == job.id, SyncJob.claimed_by == job.claim)
            if self._store.dialect == "postgresql":
                query = query.with_for_update()
            row = session.scalars(query).first()
            if row is None:
                return False
            # A request that arrived while the job ran (a webhook, an admin) must not be lost.
            requested = row.last_run_at is not None and row.due_at > row.last_run_at
            if due_at is None and not requested:
                session.delete(row)
                return True
            if requested:
                due_at = row.due_at if due_at is None else min(due_at, row.due_at)
                priority = max(priority, row.priority)
            assert due_at is not None
            row.claimed_by = None
            row.claimed_until = None
            row.due_at = due_at
            row.priority = priority
            row.last_error = (error or "")[:500] or None
            if ok:
                row.attempts = 0
                row.last_success_at = now
            elif count_attempt:
                row.attempts = job.attempts + 1
            return True
