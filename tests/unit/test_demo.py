"""Demo mode against the real sandbox app (in-process): guard, reset, its history, scenarios.

Every store test runs on SQLite and PostgreSQL (``database_url``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from starlette.exceptions import StarletteDeprecationWarning

from linkdesk.auth import Actor, PermissionDenied, Role
from linkdesk.bootstrap import Services, build_services
from linkdesk.demo import DemoModeOff, DemoRefused, SandboxControls
from linkdesk.demo.history import DEMO_STAFF
from linkdesk.demo.sandbox import refuse_real_moneykit
from linkdesk.settings import Settings
from linkdesk.store.health_totals import SUMMARY_STATE_NAME
from linkdesk.store.models import ConnectEvent, ConnectSession, Link, LinkStateChange, SyncAttempt
from linkdesk.store.repository import get_named_state
from sandbox.app import create_app
from tests.connect_sessions import rollup_differences

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SANDBOX = "http://testserver"
ADMIN = Actor("ada.admin", Role.ADMIN)
SUPPORT = Actor("sam.support", Role.SUPPORT)
VIEWER = Actor("val.viewer", Role.VIEWER)
WORLD_LINKS = 60


@pytest.fixture
def sandbox_http() -> Iterator[TestClient]:
    app = create_app(client_id="c", client_secret="s", demo_links=5, public_url=SANDBOX)
    with TestClient(app, base_url=SANDBOX) as client:
        yield client


def _services(database_url: str, http: httpx.Client, *, demo_mode: bool = False) -> Services:
    settings = Settings(
        moneykit_base_url=SANDBOX,
        moneykit_connect_host=SANDBOX,
        moneykit_client_id="c",
        moneykit_client_secret=SecretStr("s"),
        database_url=database_url,
        demo_links=WORLD_LINKS,
        demo_seed=7,
        demo_history_days=120,
        demo_mode=demo_mode,
    )
    return build_services(settings, http_client=http)


@pytest.fixture
def demo_services(database_url: str, sandbox_http: TestClient) -> Iterator[Services]:
    services = _services(database_url, sandbox_http, demo_mode=True)
    yield services
    services.close()


@pytest.mark.parametrize(
    "url",
    ["https://api.moneykit.com", "https://moneykit.com/", "https://sandbox.API.MoneyKit.com."],
)
def test_real_moneykit_hosts_are_refused_before_any_request(url: str) -> None:
    with pytest.raises(DemoRefused, match="real MoneyKit"):
        refuse_real_moneykit(url)
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"ok": True, "service": "moneykit-sandbox"})

    with pytest.raises(DemoRefused):
        SandboxControls(url, http_client=httpx.Client(transport=httpx.MockTransport(record)))
    assert requests == []


def test_demo_mode_is_off_against_the_real_moneykit_whatever_the_setting(
    database_url: str,
) -> None:
    settings = Settings(
        moneykit_base_url="https://api.moneykit.com",
        database_url=database_url,
        demo_mode=True,
    )
    services = build_services(settings)
    try:
        assert services.demo.is_enabled() is False
        with pytest.raises(DemoRefused):
            services.demo.set_enabled(ADMIN, True)
    finally:
        services.close()


def test_a_server_that_is_not_the_sandbox_is_refused() -> None:
    # Any other server: no /_sandbox/health, or one that does not name itself the sandbox.
    for answer in (httpx.Response(404, json={"detail": "Not Found"}), httpx.Response(200, json={})):
        http = httpx.Client(transport=httpx.MockTransport(lambda _r, a=answer: a))
        with pytest.raises(DemoRefused, match="not"):
            SandboxControls("http://mk.internal.example", http_client=http).verify()


def test_switch_needs_an_admin_and_the_sandbox(database_url: str, sandbox_http: TestClient) -> None:
    services = _services(database_url, sandbox_http)
    try:
        assert services.demo.is_enabled() is False  # the setting's default
        with pytest.raises(PermissionDenied):
            services.demo.set_enabled(SUPPORT, True)
        status = services.demo.set_enabled(ADMIN, True)
        assert (status.enabled, status.decided_by) == (True, ADMIN.name)
        assert services.demo.is_enabled() is True
        services.demo.set_enabled(ADMIN, False)
        assert services.demo.is_enabled() is False
        actions = [(e.action, e.outcome) for e in services.audit.entries()]
        assert ("demo.enable", "success") in actions and ("demo.disable", "success") in actions
    finally:
        services.close()

    # The same store with MoneyKit somewhere else: switching on is refused and audited.
    elsewhere = httpx.Client(transport=httpx.MockTransport(lambda _r: httpx.Response(404)))
    other = _services(database_url, elsewhere)
    try:
        with pytest.raises(DemoRefused):
            other.demo.set_enabled(ADMIN, True)
        assert other.demo.is_enabled() is False
        assert other.audit.entries()[0].outcome == "refused"
    finally:
        other.close()


def test_reset_builds_the_world_through_the_api_with_a_consistent_past(
    demo_services: Services,
) -> None:
    report = demo_services.demo.reset(ADMIN)
    assert (report.links, report.discovery_failed) == (WORLD_LINKS, 0)
    history = report.history
    assert history.state_changes >= WORLD_LINKS and history.sessions > 0 and history.events > 0
    now = datetime.now(UTC)

    with demo_services.store.read() as session:
        links = {row.link_id: row for row in session.scalars(sa.select(Link))}
        changes = session.execute(
            sa.select(LinkStateChange).order_by(LinkStateChange.link_id, LinkStateChange.at)
        ).scalars()
        by_link: dict[str, list[LinkStateChange]] = {}
        for change in changes:
            by_link.setdefault(change.link_id, []).append(change)
        sessions = list(session.scalars(sa.select(ConnectSession)))
        events = session.scalar(sa.select(sa.func.count()).select_from(ConnectEvent))
        latest = session.scalar(sa.select(sa.func.max(LinkStateChange.at)))
        attempts = session.scalar(sa.select(sa.func.count()).select_from(SyncAttempt))

    assert len(links) == WORLD_LINKS
    assert events == history.events and attempts == history.sync_attempts
    assert latest is not None and latest <= now
    for link_id, link in links.items():
        path = by_link[link_id]
        # Starts with the link's creation, each change follows on from the one before, and the
        # last one is the state the sandbox reports now.
        assert path[0].from_state is None and path[0].to_state == "connected"
        for before, after in itertools.pairwise(path):
            assert (after.from_state, after.from_error) == (before.to_state, before.to_error)
            assert after.at >= before.at
        assert (path[-1].to_state, path[-1].to_error) == (link.state, link.error_code)
    assert {s.started_by for s in sessions} - set(DEMO_STAFF) <= {
        s.started_by for s in sessions if s.started_by.startswith("customer-link:")
    }
    assert {s.outcome for s in sessions} <= {"success", "exit", "pending"}
    assert all(s.link_id in links for s in sessions if s.link_id)
    # Every demo session has its bank (the link's, or the one picked), counted in the funnel's
    # rollup as the sessions are: the bulk writes move it too.
    assert all(s.institution_id for s in sessions)
    assert all(s.institution_id == links[s.link_id].institution_id for s in sessions if s.link_id)
    assert rollup_differences(demo_services.store) == {}

    status = demo_services.demo.status()
    assert (status.world_links, status.world_built_by) == (WORLD_LINKS, ADMIN.name)
    assert demo_services.audit.entries()[0].action == "demo.reset"


def test_reset_is_repeatable_and_keeps_the_audit_log(demo_services: Services) -> None:
    first = demo_services.demo.reset(ADMIN)
    demo_services.totals.health_summary()  # counted, and stored for other processes
    trend = demo_services.overview.trend(30)  # the rollup keeps the world's moves per day
    assert any(point.needs_relink for point in trend)
    with demo_services.store.read() as session:
        assert get_named_state(session, SUMMARY_STATE_NAME) is not None
    demo_services.audit.record(actor=SUPPORT, action="note.add", outcome="success")
    old_world_counted = demo_services.totals.health_summary().computed_at
    second = demo_services.demo.reset(ADMIN)
    # The old world's totals are not shown again: the new world is counted as the reset ends,
    # for this process and the stored summary alike.
    with demo_services.store.read() as session:
        stored = get_named_state(session, SUMMARY_STATE_NAME)
        in_store = session.scalar(sa.select(sa.func.count()).select_from(Link))
    assert stored is not None and stored["computed_at"] > old_world_counted.isoformat()
    shared = demo_services.totals.health_summary(max_age=3600)
    assert shared.computed_at > old_world_counted and shared.total == in_store
    assert demo_services.demo.status().links_in_store == in_store
    # The same world again, and the rollup begun afresh: the old world's moves are not added.
    assert demo_services.overview.trend(30) == trend
    assert first.history.sessions == second.history.sessions
    assert rollup_differences(demo_services.store) == {}  # the old world's counts went with it
    assert first.history.state_changes == second.history.state_changes
    actions = [e.action for e in demo_services.audit.entries()]
    assert actions.count("demo.reset") == 2 and "note.add" in actions


def test_scenarios_need_demo_mode_and_a_presenter(
    database_url: str, sandbox_http: TestClient, demo_services: Services
) -> None:
    with pytest.raises(PermissionDenied):
        demo_services.demo.start_scenario(VIEWER, "oauth_outage")
    with pytest.raises(PermissionDenied):
        demo_services.demo.reset(SUPPORT)
    run = demo_services.demo.start_scenario(SUPPORT, "oauth_outage", speed=2)
    assert run.status == "running" and run.institution_id == "moneykit-oauth-bank"
    available, runs = demo_services.demo.scenarios()
    assert {s.name for s in available} == {"oauth_outage", "credentials_rotated"}
    assert [r.run_id for r in runs] == [run.run_id]
    assert demo_services.demo.stop_scenarios(SUPPORT) == 1
    audit = [(e.action, e.outcome) for e in demo_services.audit.entries()]
    assert ("demo.scenario", "started") in audit and ("demo.scenario", "stopped") in audit

    off = _services(database_url, sandbox_http, demo_mode=False)
    try:
        with pytest.raises(DemoModeOff):
            off.demo.start_scenario(ADMIN, "oauth_outage")
        with pytest.raises(DemoModeOff):
            off.demo.reset(ADMIN)
    finally:
        off.close()
