"""Reconciliation worker: durable claims, Retry-After, backoff, priorities, rate limits, status."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from linkdesk.auth import Actor, PermissionDenied, Role
from linkdesk.bootstrap import Services, build_services
from linkdesk.services.ratelimit import Limit, RequestBudget
from linkdesk.services.worker import SyncWorker
from linkdesk.settings import Settings
from linkdesk.store.models import Link, LinkStateChange, SyncAttempt, SyncJob, WorkerState
from linkdesk.store.sync_jobs import DISCOVERY_JOB, PRIORITY_TRIGGERED, link_job_id
from tests.unit.conftest import FakeClock, FakeMoneyKit, rate_windows_follow

ADMIN = Actor("root", Role.ADMIN)

BuildServices = Callable[..., Services]


@pytest.fixture
def make_services(
    core_settings: Settings, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> Iterator[BuildServices]:
    built: list[tuple[Services, Any]] = []

    def make(**overrides: Any) -> Services:
        worker_id = overrides.pop("worker_id", None)
        settings = core_settings.model_copy(update=overrides)
        http = fake_moneykit.http_client()
        services = build_services(
            settings,
            http_client=http,
            clock=core_clock,
            sleep=lambda _s: None,
            worker_id=worker_id,
        )
        built.append((services, http))
        return services

    yield make
    for services, http in built:
        services.close()
        http.close()


def job(services: Services, link_id: str) -> SyncJob | None:
    with services.store.read() as session:
        return session.get(SyncJob, link_job_id(link_id))


def attempts(services: Services) -> list[SyncAttempt]:
    with services.store.read() as session:
        return list(session.scalars(sa.select(SyncAttempt).order_by(SyncAttempt.id)))


def populate(fake: FakeMoneyKit, n: int, **kwargs: Any) -> list[str]:
    ids = [f"mk_{i:03d}" for i in range(n)]
    for link_id in ids:
        fake.add_link(link_id, tags=[f"customer:cust_{link_id[-3:]}"], **kwargs)
    return ids


def test_first_round_discovers_and_reads_every_link(make_services, fake_moneykit):
    ids = populate(fake_moneykit, 5)
    services = make_services()
    report = services.worker.run_once()
    assert report.discovery is not None and report.discovery.startswith("ok")
    assert report.ok == 5 and report.errors == 0
    with services.store.read() as session:
        stored = set(session.scalars(sa.select(Link.link_id)))
    assert stored == set(ids)
    assert all(fake_moneykit.calls[f"GET /links/{i}"] == 1 for i in ids)
    # Read once; nothing is due again until the interval has passed.
    assert services.worker.run_once().claimed == 0


def test_a_finished_job_reschedules_itself_at_the_interval(
    make_services, fake_moneykit, core_clock
):
    populate(fake_moneykit, 1)
    services = make_services(worker_link_interval_minutes=30)
    services.worker.run_once()
    row = job(services, "mk_000")
    assert row is not None and row.claimed_by is None
    assert timedelta(minutes=29) < row.due_at - core_clock.now <= timedelta(minutes=30)
    core_clock.advance(30 * 60 + 1)
    assert services.worker.run_once().ok == 1
    assert fake_moneykit.calls["GET /links/mk_000"] == 2


def test_discovery_marks_links_deleted_elsewhere(make_services, fake_moneykit, core_clock):
    populate(fake_moneykit, 3)
    services = make_services(worker_discovery_interval_minutes=60)
    services.worker.run_once()
    fake_moneykit.links["mk_001"]["state"] = "deleted"  # unlisted; its own read says deleted
    core_clock.advance(61 * 60)
    report = services.worker.run_once()
    assert report.discovery is not None and "1 deleted" in report.discovery
    with services.store.read() as session:
        link = session.get(Link, "mk_001")
        assert link is not None and link.state == "deleted"
    assert job(services, "mk_001") is None  # nothing left to poll


class TestListingIsNoProofOfDeletion:
    def test_an_empty_listing_deletes_nothing_and_is_flagged(
        self, make_services, fake_moneykit, core_clock, caplog
    ):
        ids = populate(fake_moneykit, 12)
        services = make_services(worker_discovery_interval_minutes=60, worker_batch_size=100)
        services.worker.run_once()
        fake_moneykit.truncated_listings.append(0)
        core_clock.advance(61 * 60)
        with caplog.at_level("WARNING", logger="linkdesk.services.discovery"):
            report = services.worker.run_once()
        assert report.discovery is not None and report.discovery.startswith("suspect")
        assert report.deleted == 0
        with services.store.read() as session:
            assert {link.state for link in session.query(Link)} == {"connected"}
            assert all(session.get(SyncJob, link_job_id(i)) is not None for i in ids)
            flagged = session.get(WorkerState, "discovery_suspect")
            assert flagged is not None
            assert {k: flagged.value[k] for k in ("listed", "known", "missing")} == {
                "listed": 0,
                "known": 12,
                "missing": 12,
            }
        assert any(r.levelname == "WARNING" for r in caplog.records)
        assert any(e.action == "discovery.suspect" for e in services.audit.entries())

        # Complete listings again: nothing was lost, the flag is cleared.
        for _ in range(3):
            core_clock.advance(61 * 60)
            services.worker.run_once()
        with services.store.read() as session:
            assert {link.state for link in session.query(Link)} == {"connected"}
            assert all(session.get(SyncJob, link_job_id(i)) is not None for i in ids)
            flagged = session.get(WorkerState, "discovery_suspect")
            assert flagged is not None and flagged.value == {}

    def test_links_a_small_listing_lacks_are_read_not_deleted(
        self, make_services, fake_moneykit, core_clock
    ):
        populate(fake_moneykit, 3)
        services = make_services(worker_discovery_interval_minutes=60)
        services.worker.run_once()
        fake_moneykit.truncated_listings.append(1)
        core_clock.advance(61 * 60)
        before = fake_moneykit.calls["GET /links/mk_002"]
        report = services.worker.run_once()
        assert report.discovery is not None and "2 not listed (2 kept" in report.discovery
        assert fake_moneykit.calls["GET /links/mk_002"] > before
        with services.store.read() as session:
            assert {link.state for link in session.query(Link)} == {"connected"}

    def test_a_404_keeps_the_link_and_reads_it_again_later(
        self, make_services, fake_moneykit, core_clock
    ):
        populate(fake_moneykit, 2)
        services = make_services()
        services.worker.run_once()
        stored = fake_moneykit.links.pop("mk_000")  # 404 link_error.not_found
        services.worker.trigger_sync(ADMIN, link_id="mk_000")
        report = services.worker.run_once()
        assert (report.deleted, report.errors) == (0, 1)
        row = job(services, "mk_000")
        assert row is not None and row.due_at > core_clock.now
        assert row.last_error is not None and "404" in row.last_error
        assert [a.outcome for a in attempts(services) if a.link_id == "mk_000"][-1] == "not_found"
        with services.store.read() as session:
            link = session.get(Link, "mk_000")
            assert link is not None and link.state == "connected"
        fake_moneykit.links["mk_000"] = stored  # MoneyKit answers again
        core_clock.advance(3600)
        services.worker.run_once()
        assert job(services, "mk_000").last_error is None  # type: ignore[union-attr]

    def test_a_link_listed_again_is_restored_with_its_history_and_job(
        self, make_services, fake_moneykit, core_clock
    ):
        populate(fake_moneykit, 3)
        services = make_services(worker_discovery_interval_minutes=60)
        services.worker.run_once()
        fake_moneykit.links["mk_001"]["state"] = "deleted"
        core_clock.advance(61 * 60)
        services.worker.run_once()
        assert job(services, "mk_001") is None
        fake_moneykit.links["mk_001"]["state"] = "connected"
        core_clock.advance(61 * 60)
        report = services.worker.run_once()
        assert report.discovery is not None and "1 restored" in report.discovery
        assert job(services, "mk_001") is not None
        with services.store.read() as session:
            link = session.get(Link, "mk_001")
            assert link is not None and link.state == "connected"
            history = session.execute(
                sa.select(LinkStateChange.from_state, LinkStateChange.to_state)
                .where(LinkStateChange.link_id == "mk_001")
                .order_by(LinkStateChange.id)
            ).all()
        assert [tuple(h) for h in history] == [
            (None, "connected"),
            ("connected", "deleted"),
            ("deleted", "connected"),
        ]
        assert any(
            (e.action, e.link_id) == ("link.restore", "mk_001") for e in services.audit.entries()
        )


class TestDurableClaims:
    def test_a_crashed_workers_claim_expires_and_is_retaken(
        self, make_services, fake_moneykit, core_clock
    ):
        populate(fake_moneykit, 3)
        seed = make_services()
        seed.discovery.sync_all()
        crashed = make_services(worker_id="crashed", worker_claim_seconds=120)
        crashed.worker.jobs.ensure_jobs()
        taken = crashed.worker.jobs.claim("crashed", limit=10, lease=timedelta(seconds=120))
        assert len(taken) == 3  # ...and then the process dies without finishing
        before = {i: fake_moneykit.calls[f"GET /links/{i}"] for i in ("mk_000", "mk_001")}

        survivor = make_services(worker_id="survivor")
        assert survivor.worker.run_once().claimed == 0
        assert {i: fake_moneykit.calls[f"GET /links/{i}"] for i in before} == before

        core_clock.advance(121)
        report = survivor.worker.run_once()
        assert report.claimed == 3 and report.ok == 3
        # The dead worker's late finish cannot overwrite the new schedule.
        assert crashed.worker.jobs.finish(taken[0], due_at=core_clock.now, priority=0, ok=True) is (
            False
        )

    def test_two_workers_never_run_the_same_job(self, make_services, fake_moneykit, core_clock):
        ids = populate(fake_moneykit, 24)
        seed = make_services()
        seed.discovery.sync_all()
        calls_before = {i: fake_moneykit.calls[f"GET /links/{i}"] for i in ids}
        workers = [
            make_services(worker_id=f"w{n}", sync_concurrency=3, worker_batch_size=5)
            for n in range(3)
        ]
        barrier = threading.Barrier(len(workers))
        errors: list[BaseException] = []

        def run(services: Services) -> None:
            try:
                barrier.wait()
                for _ in range(6):
                    services.worker.run_once()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        reads = {i: fake_moneykit.calls[f"GET /links/{i}"] - calls_before[i] for i in ids}
        assert set(reads.values()) == {1}, reads
        by_worker = {a.worker for a in attempts(seed) if a.kind == "link"}
        assert len(by_worker) >= 2  # the work was actually shared

    def test_a_webhook_request_during_a_run_is_not_lost(self, make_services, fake_moneykit):
        populate(fake_moneykit, 1)
        services = make_services()
        services.discovery.sync_all()
        queue = services.worker.jobs
        queue.ensure_jobs()
        (claimed,) = queue.claim("w", limit=5, lease=timedelta(minutes=5))
        queue.request("mk_000", priority=100)  # arrives while the job runs
        queue.finish(claimed, due_at=claimed_due_later(services), priority=0, ok=True)
        row = job(services, "mk_000")
        assert row is not None and row.priority == 100
        assert row.due_at < claimed_due_later(services) - timedelta(minutes=29)


def claimed_due_later(services: Services) -> Any:
    return services.worker._clock() + timedelta(minutes=30)


class TestMoneyKitPushback:
    def test_retry_after_reschedules_only_that_link(self, make_services, fake_moneykit, core_clock):
        populate(fake_moneykit, 3)
        services = make_services()
        services.discovery.sync_all()
        fake_moneykit.link_faults["mk_001"] = (429, {"Retry-After": "120"})
        report = services.worker.run_once()
        assert (report.ok, report.rate_limited) == (2, 1)
        assert fake_moneykit.calls["GET /links/mk_001"] == 2  # the sync's read + one, no retries
        row = job(services, "mk_001")
        assert row is not None
        assert timedelta(seconds=119) < row.due_at - core_clock.now <= timedelta(seconds=120)
        assert row.attempts == 0  # being told to wait is not a failure
        assert [a.outcome for a in attempts(services) if a.link_id == "mk_001"] == ["rate_limited"]

        core_clock.advance(60)
        services.worker.run_once()
        assert fake_moneykit.calls["GET /links/mk_001"] == 2
        del fake_moneykit.link_faults["mk_001"]
        core_clock.advance(61)
        assert services.worker.run_once().ok == 1
        assert fake_moneykit.calls["GET /links/mk_001"] == 3

    def test_server_errors_back_off_exponentially(self, make_services, fake_moneykit, core_clock):
        populate(fake_moneykit, 1)
        services = make_services()
        services.discovery.sync_all()
        fake_moneykit.failing_links.add("mk_000")
        waits = []
        for _ in range(3):
            core_clock.advance(3600)
            services.worker.run_once()
            row = job(services, "mk_000")
            assert row is not None
            waits.append(round((row.due_at - core_clock.now).total_seconds()))
        assert waits == [30, 60, 120]
        assert job(services, "mk_000").last_error  # type: ignore[union-attr]
        fake_moneykit.failing_links.clear()
        core_clock.advance(3600)
        services.worker.run_once()
        assert job(services, "mk_000").attempts == 0  # type: ignore[union-attr]

    def test_a_link_gone_at_moneykit_is_marked_deleted(self, make_services, fake_moneykit):
        populate(fake_moneykit, 2)
        services = make_services()
        services.worker.run_once()
        fake_moneykit.link_faults["mk_000"] = (410, {})  # link_error.deleted
        services.worker.trigger_sync(ADMIN, link_id="mk_000")
        assert services.worker.run_once().deleted == 1
        assert job(services, "mk_000") is None
        with services.store.read() as session:
            gone = session.get(Link, "mk_000")
            assert gone is not None and gone.state == "deleted"


class TestPriorities:
    def test_unhealthy_links_are_read_first(self, make_services, fake_moneykit):
        populate(fake_moneykit, 4)
        fake_moneykit.add_link("mk_bad1", state="error", error_code="auth_expired")
        fake_moneykit.add_link("mk_bad2", state="awaiting_token_exchange")
        services = make_services(worker_batch_size=2)
        services.discovery.sync_all()
        services.worker.jobs.ensure_jobs()
        (discovery,) = services.worker.jobs.claim(
            "x", limit=1, lease=timedelta(hours=1), kinds=("discovery",)
        )
        assert discovery.id == DISCOVERY_JOB
        services.worker.run_once()
        first = {a.link_id for a in attempts(services) if a.kind == "link"}
        assert first == {"mk_bad1", "mk_bad2"}

    def test_webhook_and_admin_requests_jump_the_queue(self, make_services, fake_moneykit):
        populate(fake_moneykit, 5)
        fake_moneykit.add_link("mk_bad", state="error", error_code="auth_expired")
        services = make_services(worker_batch_size=1)
        services.discovery.sync_all()
        services.worker.jobs.ensure_jobs()
        services.worker.trigger_sync(ADMIN, link_id="mk_003", reason="customer on the phone")
        services.worker.run_once()
        (first,) = [a.link_id for a in attempts(services) if a.kind == "link"]
        assert first == "mk_003"
        (entry,) = services.audit.entries(action="sync.trigger")
        assert (entry.actor, entry.role, entry.reason) == ("root", "admin", "customer on the phone")
        row = job(services, "mk_bad")
        assert row is not None and row.priority < PRIORITY_TRIGGERED

    def test_sync_everything_twice_queues_every_link_once(
        self, make_services, fake_moneykit, core_clock
    ):
        populate(fake_moneykit, 4)
        services = make_services()
        services.discovery.sync_all()
        services.worker.run_once()  # every link read once: the jobs are due later
        assert services.worker.trigger_sync(ADMIN) == 4
        due = {link_id: job(services, link_id).due_at for link_id in ("mk_000", "mk_003")}  # type: ignore[union-attr]
        core_clock.advance(1)
        # Asked again while the first request is still queued: nothing moves back in line.
        assert services.worker.trigger_sync(ADMIN) == 0
        assert {link_id: job(services, link_id).due_at for link_id in due} == due  # type: ignore[union-attr]
        details = [e.detail for e in services.audit.entries(action="sync.trigger")]
        assert sorted(details) == ["0 link(s) due now", "4 link(s) due now"]
        # Once read, a link can be asked for again.
        services.worker.run_once()
        assert services.worker.trigger_sync(ADMIN) == 4


class TestRateLimits:
    def test_the_worker_claims_no_more_than_the_app_limit_allows(
        self, make_services, fake_moneykit, core_clock
    ):
        ids = populate(fake_moneykit, 6)
        seed = make_services()
        seed.discovery.sync_all()
        before = sum(fake_moneykit.calls[f"GET /links/{i}"] for i in ids)
        services = make_services(worker_link_reads_per_minute=4)
        report = services.worker.run_once()
        assert (report.claimed, report.ok, report.deferred) == (4, 4, 0)
        assert sum(fake_moneykit.calls[f"GET /links/{i}"] for i in ids) - before == 4
        # The two it had no room for stay due, unclaimed and untouched: the backlog shows.
        waiting = [job(services, i) for i in ids]
        left = [j for j in waiting if j is not None and j.last_run_at is None]
        assert len(left) == 2
        assert all(j.claimed_by is None and j.attempts == 0 for j in left)
        assert services.worker.status().jobs_due == 2
        core_clock.advance(61)
        assert services.worker.run_once().ok == 2

    def test_a_spent_budget_claims_nothing_and_says_when_to_come_back(
        self, make_services, fake_moneykit, core_clock
    ):
        populate(fake_moneykit, 5)
        services = make_services(worker_link_reads_per_minute=2)
        first = services.worker.run_once()
        assert (first.ok, first.budget_wait) == (2, pytest.approx(60, abs=1))
        core_clock.advance(20)
        second = services.worker.run_once()
        assert (second.claimed, second.deferred) == (0, 0)
        assert second.budget_wait == pytest.approx(40, abs=1)
        assert fake_moneykit.calls["GET /links/mk_002"] == 0
        core_clock.advance(41)
        assert services.worker.run_once().ok == 2

    def test_a_round_not_held_back_by_the_budget_reports_no_wait(
        self, make_services, fake_moneykit
    ):
        populate(fake_moneykit, 3)
        services = make_services()
        assert services.worker.run_once().budget_wait is None

    def test_run_forever_pauses_until_the_budget_has_room(
        self, make_services, fake_moneykit, core_clock
    ):
        populate(fake_moneykit, 5)
        services = make_services(worker_link_reads_per_minute=2, worker_poll_seconds=45)
        pauses: list[float] = []
        stop = threading.Event()

        def sleep(seconds: float) -> None:
            pauses.append(seconds)
            core_clock.advance(seconds)
            if len(pauses) == 4:
                stop.set()

        worker = SyncWorker(
            store=services.store,
            client=services.client,
            settings=services.settings,
            audit=services.audit,
            clock=core_clock,
            budget=services.budget,
            sleep=sleep,
            worker_id="paced",
        )
        worker.run_forever(stop)
        # Two reads fill the minute's budget: wait the poll interval (shorter than the minute),
        # then only the 15 s until the first read leaves the window; read one, pause briefly
        # until the second slot frees a moment later, read one more, and the budget is full.
        assert pauses == [
            pytest.approx(45, abs=0.5),
            pytest.approx(15, abs=0.5),
            0.5,
            pytest.approx(45, abs=0.5),
        ]
        reads = sum(fake_moneykit.calls[f"GET /links/mk_{i:03d}"] for i in range(5))
        assert reads == 4
        assert all(a.outcome == "ok" for a in attempts(services) if a.kind == "link")

    def test_accounts_are_skipped_not_waited_for_past_the_per_link_limit(
        self, make_services, fake_moneykit, core_clock
    ):
        populate(fake_moneykit, 1)
        services = make_services(worker_account_reads_per_link_per_minute=1)
        services.worker.run_once()
        assert fake_moneykit.calls["GET /links/mk_000/accounts"] == 1
        services.worker.trigger_sync(ADMIN, link_id="mk_000")
        assert services.worker.run_once().ok == 1
        assert fake_moneykit.calls["GET /links/mk_000"] == 2
        assert fake_moneykit.calls["GET /links/mk_000/accounts"] == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_request_budget_never_exceeds_any_limit(seed, monkeypatch):
    now = [1e9]
    rate_windows_follow(monkeypatch, lambda: now[0])
    budget = RequestBudget(
        {"link": Limit(per_app=20, per_link=3), "list": Limit(per_app=5)},
        wall=lambda: now[0],
    )
    rng = random.Random(seed)
    taken: dict[tuple[str, str | None], list[float]] = {}
    for _ in range(4000):
        now[0] += rng.expovariate(1.0)  # about one attempt a second, in bursts
        endpoint = rng.choice(["link", "link", "list"])
        link = rng.choice(["a", "b", "c", "d"]) if endpoint == "link" else None
        wait = budget.try_acquire(endpoint, link)
        if wait == 0:
            taken.setdefault((endpoint, None), []).append(now[0])
            if link:
                taken.setdefault((endpoint, link), []).append(now[0])
        else:
            assert wait > 0
    limits: dict[tuple[str, str | None], int] = {("link", None): 20, ("list", None): 5}
    for key, times in taken.items():
        limit = limits.get(key, 3)
        for i, start in enumerate(times):
            in_window = sum(1 for t in times[i:] if t < start + 60.0)
            assert in_window <= limit, (key, start)
    # And the budget was actually used up to the limits, not refused everything.
    assert max(len(v) for k, v in taken.items() if k == ("link", None)) > 100


def test_request_budget_says_how_long_to_wait(monkeypatch):
    now = [1e9]
    rate_windows_follow(monkeypatch, lambda: now[0])
    budget = RequestBudget({"accounts": Limit(per_app=10, per_link=2)}, wall=lambda: now[0])
    assert budget.try_acquire("accounts", "x") == 0
    now[0] += 10
    assert budget.try_acquire("accounts", "x") == 0
    now[0] += 5
    wait = budget.try_acquire("accounts", "x")
    assert wait == pytest.approx(45.0, abs=0.02)
    assert budget.try_acquire("accounts", "y") == 0  # other links are not held up
    now[0] += wait - 0.02
    assert budget.try_acquire("accounts", "x") > 0  # not a moment before
    now[0] += 0.02
    assert budget.try_acquire("accounts", "x") == 0


def test_request_budget_room_counts_free_app_slots_and_the_wait_for_the_next(monkeypatch):
    now = [1e9]
    rate_windows_follow(monkeypatch, lambda: now[0])
    budget = RequestBudget({"link": Limit(per_app=3, per_link=1)}, wall=lambda: now[0])
    assert budget.room("link") == (3, 0.0)
    assert budget.try_acquire("link", "a") == 0
    now[0] += 10
    assert budget.try_acquire("link", "b") == 0
    assert budget.room("link") == (1, 0.0)
    assert budget.try_acquire("link", "c") == 0
    assert budget.room("link") == (0, pytest.approx(50.0, abs=0.02))
    now[0] += 50.01
    assert budget.room("link") == (1, 0.0)  # "a" left the window
    # room() only looks: it takes nothing.
    assert budget.room("link") == (1, 0.0)


class TestStatusAndControls:
    def test_status_reports_progress_and_lag(self, make_services, fake_moneykit, core_clock):
        populate(fake_moneykit, 3)
        services = make_services(worker_link_reads_per_minute=2)
        report = services.worker.run_once()
        assert (report.ok, report.deferred) == (2, 0)
        status = services.worker.status()
        assert status.jobs_total == 4  # three links + discovery
        # The link the budget had no room for is due and waiting since discovery found it.
        assert status.jobs_due == 1
        assert timedelta(0) < status.lag < timedelta(seconds=1)
        assert status.links_synced_last_hour == 2
        assert status.last_discovery_at is not None and status.last_run_at is not None
        core_clock.advance(75)  # nobody has run it since
        status = services.worker_progress.status()
        assert status.jobs_due == 1
        assert timedelta(seconds=75) <= status.lag <= timedelta(seconds=76)

    def test_errors_show_in_status(self, make_services, fake_moneykit):
        populate(fake_moneykit, 2)
        services = make_services()
        services.discovery.sync_all()
        fake_moneykit.failing_links.add("mk_001")
        services.worker.run_once()
        status = services.worker.status()
        assert status.errors_last_hour == 1 and "500" in (status.last_error or "")
        history = services.activity.sync_attempts(link_id="mk_001")
        assert [h.outcome for h in history] == ["error"]

    def test_pause_stops_rounds_until_resumed(self, make_services, fake_moneykit):
        populate(fake_moneykit, 2)
        services = make_services()
        services.worker.pause(ADMIN, reason="MoneyKit incident")
        assert services.worker.run_once().paused
        assert fake_moneykit.calls["GET /links"] == 0
        assert services.worker.status().paused
        services.worker.resume(ADMIN)
        assert services.worker.run_once().ok == 2

    def test_worker_controls_are_admin_only(self, make_services):
        services = make_services()
        with pytest.raises(PermissionDenied):
            services.worker.pause(Actor("sam", Role.SUPPORT))
        with pytest.raises(PermissionDenied):
            services.worker.trigger_sync(Actor("vic", Role.VIEWER))

    def test_run_forever_stops_when_asked(self, make_services, fake_moneykit):
        populate(fake_moneykit, 1)
        services = make_services()
        stop = threading.Event()
        rounds = []

        def on_round(report: Any) -> None:
            rounds.append(report)
            if len(rounds) == 3:
                stop.set()

        services.worker.run_forever(stop, on_round=on_round)
        assert len(rounds) == 3 and rounds[0].ok == 1

    def test_a_failing_round_does_not_kill_the_worker(self, make_services, monkeypatch):
        services = make_services()
        worker: SyncWorker = services.worker
        stop = threading.Event()
        calls = []

        def explode() -> Any:
            calls.append(1)
            if len(calls) >= 2:
                stop.set()
            raise RuntimeError("database went away")

        monkeypatch.setattr(worker, "run_once", explode)
        worker.run_forever(stop)
        assert len(calls) == 2
