"""PostgreSQL-only behaviour: migrations serialised across processes, job claims that skip rows
another worker holds instead of queueing behind them. Skipped without LINKDESK_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from linkdesk.store.engine import Store, create_engine, migrate
from linkdesk.store.models import SyncJob
from linkdesk.store.sync_jobs import PRIORITY_ROUTINE, JobQueue
from tests.conftest import PostgresDatabases, empty_all_tables

T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def pg_store(postgres_module_url: str) -> Iterator[Store]:
    empty_all_tables(postgres_module_url)
    engine = create_engine(postgres_module_url)
    yield Store(engine)
    engine.dispose()


def test_replicas_migrating_at_once_take_turns(postgres_databases: PostgresDatabases):
    url = postgres_databases.create("migrate_race")
    try:
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                barrier.wait()
                migrate(url)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        engine = sa.create_engine(url, poolclass=NullPool)
        with engine.connect() as connection:
            versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        engine.dispose()
        assert versions == [("0012",)]
    finally:
        postgres_databases.drop(url)


def test_a_claim_skips_jobs_locked_by_another_worker_without_waiting(pg_store: Store):
    queue = JobQueue(pg_store, clock=lambda: T0)
    with pg_store.write() as session:
        for i in range(4):
            JobQueue.schedule_link(
                session, f"mk_{i}", due_at=T0 - timedelta(minutes=1), priority=PRIORITY_ROUTINE
            )

    # Another worker is in the middle of claiming mk_0: its row lock is held until it commits.
    other = pg_store.engine.connect()
    other.execute(sa.select(SyncJob.id).where(SyncJob.id == "link:mk_0").with_for_update()).all()
    claimed: list[str] = []
    done = threading.Event()

    def claim() -> None:
        claimed.extend(job.id for job in queue.claim("w2", limit=10, lease=timedelta(minutes=5)))
        done.set()

    thread = threading.Thread(target=claim, daemon=True)
    thread.start()
    try:
        # Without SKIP LOCKED the claim would wait for the other transaction (forever here).
        assert done.wait(timeout=10), "claim waited for a row another worker had locked"
    finally:
        other.rollback()
        other.close()
        thread.join(timeout=10)
    assert sorted(claimed) == ["link:mk_1", "link:mk_2", "link:mk_3"]

    # Once the other worker let go without claiming it, mk_0 is free for the next claim.
    again = queue.claim("w2", limit=10, lease=timedelta(minutes=5))
    assert [job.id for job in again] == ["link:mk_0"]


def test_many_workers_claiming_at_once_never_share_a_job(postgres_module_url: str):
    empty_all_tables(postgres_module_url)
    stores = [Store(create_engine(postgres_module_url)) for _ in range(6)]
    try:
        with stores[0].write() as session:
            for i in range(120):
                JobQueue.schedule_link(session, f"mk_{i:03d}", due_at=T0, priority=PRIORITY_ROUTINE)
        barrier = threading.Barrier(len(stores))
        taken: dict[int, list[str]] = {i: [] for i in range(len(stores))}
        errors: list[BaseException] = []

        def work(index: int) -> None:
            queue = JobQueue(stores[index], clock=lambda: T0)
            try:
                barrier.wait()
                while batch := queue.claim(f"w{index}", limit=7, lease=timedelta(minutes=5)):
                    taken[index].extend(job.id for job in batch)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        everything = [job for jobs in taken.values() for job in jobs]
        assert len(everything) == 120 and len(set(everything)) == 120
        assert sum(1 for jobs in taken.values() if jobs) >= 2  # they really did compete
    finally:
        for store in stores:
            store.dispose()
