"""Demo scenarios play out live: sandbox process → signed webhooks over HTTP → receiver → worker.

Nothing here writes link states into the store: the test starts a scenario on the sandbox and
watches Linkdesk's store follow it through the webhooks and the worker, as with the real MoneyKit.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import Services, build_services
from linkdesk.read.links import LinkFilters
from linkdesk.settings import Settings
from linkdesk.store.models import Link, LinkStateChange, WebhookDelivery
from linkdesk.webhooks.asgi import WEBHOOK_PATH
from tests.integration.conftest import CLIENT_ID, CLIENT_SECRET, serving_receiver
from tests.sandbox_process import free_port, running_sandbox

PRESENTER = Actor("pat.presenter", Role.ADMIN)
WORLD_LINKS = 240
SPEED = 20.0  # the two-minute timetables in about six seconds


@pytest.fixture(scope="module")
def receiver_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sandbox_url(receiver_port: int) -> Iterator[str]:
    # The company's app gave its links our receiver's URL: the sandbox knows it from the start.
    hook = f"http://localhost:{receiver_port}{WEBHOOK_PATH}"
    try:
        with running_sandbox(
            CLIENT_ID, CLIENT_SECRET, "--demo-links", "10", "--demo-webhook-url", hook
        ) as url:
            yield url
    except RuntimeError as failure:
        pytest.fail(str(failure))


@pytest.fixture(scope="module")
def demo(
    sandbox_url: str, receiver_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    folder = tmp_path_factory.mktemp("demo")
    settings = Settings(
        moneykit_base_url=sandbox_url,
        moneykit_connect_host=sandbox_url,
        moneykit_client_id=CLIENT_ID,
        moneykit_client_secret=SecretStr(CLIENT_SECRET),
        database_url=f"sqlite:///{folder / 'linkdesk.db'}",
        signing_key_file=str(folder / "signing.key"),
        webhook_issuer=sandbox_url,
        demo_mode=True,
        demo_links=WORLD_LINKS,
        worker_poll_seconds=0.2,
    )
    services = build_services(settings, worker_id="demo-integration")
    stop = threading.Event()
    worker = threading.Thread(target=services.worker.run_forever, args=(stop,), daemon=True)
    try:
        with serving_receiver(services, receiver_port):
            report = services.demo.reset(PRESENTER)
            assert report.links == WORLD_LINKS and report.discovery_failed == 0
            worker.start()
            yield services
            stop.set()
            worker.join(timeout=30)
    finally:
        services.close()


def _states(services: Services, institution_id: str) -> Counter[tuple[str, str | None]]:
    with services.store.read() as session:
        rows = session.execute(
            sa.select(Link.state, Link.error_code).where(Link.institution_id == institution_id)
        ).all()
    return Counter((state, error) for state, error in rows)


def _watch(
    services: Services,
    institution_id: str,
    done: Callable[[Counter[tuple[str, str | None]]], bool],
    *,
    timeout: float = 90,
) -> list[Counter[tuple[str, str | None]]]:
    """Poll the store until ``done`` holds; returns every snapshot seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = _states(services, institution_id)
        seen.append(snapshot)
        if done(snapshot):
            return seen
        time.sleep(0.2)
    pytest.fail(f"the store did not follow the scenario; last seen {seen[-1]}")


def _accepted_since(services: Services, since_id: int) -> int:
    with services.store.read() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count())
                .select_from(WebhookDelivery)
                .where(WebhookDelivery.id > since_id, WebhookDelivery.verdict == "accepted")
            )
            or 0
        )


def _last_delivery_id(services: Services) -> int:
    with services.store.read() as session:
        return int(session.scalar(sa.select(sa.func.max(WebhookDelivery.id))) or 0)


def test_oauth_outage_reaches_the_store_and_recovers(demo: Services, sandbox_url: str) -> None:
    first_delivery = _last_delivery_id(demo)
    run = demo.demo.start_scenario(PRESENTER, "oauth_outage", speed=SPEED)
    started = datetime.fromisoformat(run.started_at.replace("Z", "+00:00"))
    bank = run.institution_id
    sandbox_links = httpx.get(f"{sandbox_url}/_sandbox/scenarios").json()
    assert sandbox_links["runs"][0]["status"] == "running"
    before = _states(demo, bank)
    healthy_before = before[("connected", None)]
    failing_before = before[("error", "institution_error")]

    # The wave reaches Linkdesk: every link that was connected ends up in institution_error...
    seen = _watch(
        demo, bank, lambda s: s[("error", "institution_error")] == healthy_before + failing_before
    )
    assert any(
        0 < s[("error", "institution_error")] - failing_before < healthy_before for s in seen
    )
    # ...and then comes back, once the sandbox has played the recovery.
    _watch(demo, bank, lambda s: s == before)
    # The sandbox marks the run finished on the tick after its last step (every 0.5 s), which
    # on a busy machine can come after the store has already caught up.
    deadline = time.monotonic() + 30
    final = httpx.get(f"{sandbox_url}/_sandbox/scenarios").json()["runs"][0]
    while final["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        final = httpx.get(f"{sandbox_url}/_sandbox/scenarios").json()["runs"][0]
    assert final["status"] == "finished" and final["links_changed"] == 2 * healthy_before

    assert _accepted_since(demo, first_delivery) >= 2 * healthy_before
    with demo.store.read() as session:
        sources = Counter(
            session.scalars(
                sa.select(LinkStateChange.source)
                .join(Link, Link.link_id == LinkStateChange.link_id)
                .where(Link.institution_id == bank, LinkStateChange.at >= started)
            ).all()
        )
    assert sources and set(sources) <= {"webhook", "sync"}
    assert sources["webhook"] >= healthy_before


def test_credentials_rotated_leaves_expired_links_for_support(
    demo: Services, sandbox_url: str
) -> None:
    run = demo.demo.start_scenario(PRESENTER, "credentials_rotated", speed=SPEED)
    bank = run.institution_id
    expired_before = _states(demo, bank)[("error", "auth_expired")]

    def finished() -> dict[str, object]:
        runs = httpx.get(f"{sandbox_url}/_sandbox/scenarios").json()["runs"]
        latest: dict[str, object] = runs[0]
        return latest

    deadline = time.monotonic() + 60
    while finished()["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    left = int(str(finished()["links_still_broken"]))
    assert left > 0
    _watch(demo, bank, lambda s: s[("error", "auth_expired")] == expired_before + left)
    needs_relink = demo.links.count_links(
        LinkFilters(institution_id=bank, error_code="auth_expired")
    )
    assert needs_relink == expired_before + left
