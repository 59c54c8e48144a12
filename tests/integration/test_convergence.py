"""Webhooks can be lost: the sync worker alone must bring every link to MoneyKit's truth.

The real sandbox process drops every webhook (its demo links have no webhook URL), fails 20 % of
link reads with a 5xx and rate-limits 10 % with `Retry-After`, while a fifth of the links change
state behind Linkdesk's back. The worker runs rounds on a clock the test moves forward by one
sync interval at a time; nothing may be lost, and it must converge within a bounded number of
intervals.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr

from linkdesk.bootstrap import build_services
from linkdesk.settings import Settings
from linkdesk.store.models import Link
from tests.integration.conftest import CLIENT_ID, CLIENT_SECRET, Sandbox

DEMO_LINKS = 40
CHANGES = [
    ("error", "auth_expired"),
    ("error", "institution_error"),
    ("error", "invalid_credentials"),
    ("connected", None),
]


class SteppedClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def sandbox_truth(sandbox: Sandbox) -> dict[str, tuple[str, str | None]]:
    listing = sandbox.api("GET", "/links", params={"limit": 500}).json()["links"]
    truth = {}
    for item in listing:
        link = sandbox.api("GET", f"/links/{item['link_id']}").json()
        truth[link["link_id"]] = (link["state"], link.get("error_code"))
    return truth


def test_worker_alone_converges_every_link_despite_faults(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.control("DELETE", "/faults")
    sandbox.control("POST", "/reset", json={"demo_links": DEMO_LINKS})
    sandbox.control("POST", "/rate-limits", json={"enabled": False})
    clock = SteppedClock()
    settings = Settings(
        moneykit_base_url=sandbox.url,
        moneykit_connect_host=sandbox.url,
        moneykit_client_id=CLIENT_ID,
        moneykit_client_secret=SecretStr(CLIENT_SECRET),
        database_url=f"sqlite:///{tmp_path / 'linkdesk.db'}",
        signing_key_file=str(tmp_path / "signing.key"),
        moneykit_max_retries=0,
        worker_batch_size=100,
    )
    services = build_services(settings, clock=clock, worker_id="convergence")
    try:
        first = services.discovery.sync_all()
        assert first.ok == DEMO_LINKS

        # A fifth of the links change behind Linkdesk's back; no webhook tells it.
        link_ids = sorted(sandbox_truth(sandbox))
        for index, link_id in enumerate(link_ids[: DEMO_LINKS // 5]):
            state, error = CHANGES[index % len(CHANGES)]
            body = {"state": state, "error_code": error} if error else {"state": state}
            sandbox.control("POST", f"/links/{link_id}/state", json=body)
        truth = sandbox_truth(sandbox)
        assert len(truth) == DEMO_LINKS

        sandbox.control(
            "POST",
            "/faults",
            json={
                "seed": 11,
                "rules": [
                    {
                        "pattern": r"^GET /links/",
                        "error_rate": 0.2,
                        "error_status": 503,
                        "rate_limit_rate": 0.1,
                        "retry_after_s": 2,
                    }
                ],
            },
        )

        def stored() -> dict[str, tuple[str, str | None]]:
            with services.store.read() as session:
                return {
                    link.link_id: (link.state, link.error_code)
                    for link in session.query(Link).all()
                }

        assert stored() != truth, "the changes must be unknown to Linkdesk before the worker runs"
        interval = timedelta(minutes=settings.worker_unhealthy_interval_minutes)
        rounds = 0
        faults_seen = 0
        while stored() != truth and rounds < 60:  # bounded
            if rounds:
                clock.advance(interval)
            report = services.worker.run_once()
            rounds += 1
            faults_seen += report.errors + report.rate_limited
        assert stored() == truth, f"not converged after {rounds} rounds"
        assert faults_seen > 0, "the injected faults were never hit; the test proves nothing"
        print(f"converged after {rounds} worker rounds, {faults_seen} injected faults met")
    finally:
        sandbox.control("DELETE", "/faults")
        sandbox.control("POST", "/rate-limits", json={"enabled": True})
        services.close()
