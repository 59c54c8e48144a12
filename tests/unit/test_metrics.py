"""Metrics: per-process counters fed by the client, receiver and Connect hooks; gauges from the
shared database; the bearer token; the shipped Prometheus rules checked by Debian's promtool."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import Services
from linkdesk.metrics import authorized, serve_metrics
from linkdesk.moneykit.client import endpoint_template
from linkdesk.moneykit.errors import RateLimitError
from linkdesk.store.repository import put_named_state
from tests.unit.conftest import FakeClock, FakeMoneyKit, WebhookSigner
from tests.unit.test_services_connect import log_entry

ROOT = Path(__file__).resolve().parents[2]


def samples(services: Services) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = services.metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(services: Services, name: str, **labels: str) -> float:
    return samples(services).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/links/lnk_123", "/links/{id}"),
        ("/links/lnk_123/accounts", "/links/{id}/accounts"),
        ("/links/lnk_1/accounts/numbers", "/links/{id}/accounts/numbers"),
        ("/links/lnk_1/accounts/acc_9", "/links/{id}/accounts/{id}"),
        ("/links", "/links"),
        ("/links/import", "/links/import"),
        ("/users/u_1/transactions", "/users/{id}/transactions"),
        ("/webhooks/test/link/lnk_5", "/webhooks/test/link/{id}"),
        ("/auth/token", "/auth/token"),
    ],
)
def test_endpoint_templates_keep_ids_out_of_labels(path: str, template: str) -> None:
    assert endpoint_template(path) == template


def test_moneykit_requests_429s_and_retries_are_counted_by_endpoint(
    core_services: Services, fake_moneykit: FakeMoneyKit
) -> None:
    fake_moneykit.add_link("mk_1")
    fake_moneykit.link_faults["mk_1"] = (429, {"Retry-After": "1"})
    retries = core_services.client.max_retries
    with pytest.raises(RateLimitError):
        core_services.client.get_link("mk_1")  # the foreground client retries 429s
    del fake_moneykit.link_faults["mk_1"]
    core_services.client.get_link("mk_1")
    get = {"endpoint": "/links/{id}", "method": "GET"}
    counted = "linkdesk_moneykit_requests_total"
    assert value(core_services, counted, status="429", **get) == retries + 1
    assert value(core_services, counted, status="200", **get) == 1
    assert value(core_services, "linkdesk_moneykit_rate_limited_total", endpoint="/links/{id}") == (
        retries + 1
    )
    assert (
        value(core_services, "linkdesk_moneykit_retries_total", endpoint="/links/{id}") == retries
    )
    histogram = "linkdesk_moneykit_request_seconds_count"
    assert value(core_services, histogram, endpoint="/links/{id}") == retries + 2
    assert retries > 0


def test_webhook_deliveries_are_counted_by_verdict_and_reason(
    core_services: Services,
    fake_moneykit: FakeMoneyKit,
    signer: WebhookSigner,
    core_clock: FakeClock,
) -> None:
    fake_moneykit.signer = signer
    fake_moneykit.add_link("mk_1")
    core_services.discovery.sync_all()
    body, headers = signer.delivery(link_id="mk_1", iat=core_clock.now, state="connected")
    core_services.webhooks.receive(body, headers)
    core_services.webhooks.receive(body, headers)
    core_services.webhooks.receive(body.replace(b"connected", b"connectee"), headers)
    counted = "linkdesk_webhook_deliveries_total"
    assert value(core_services, counted, verdict="accepted", reason="ok") == 1
    assert value(core_services, counted, verdict="duplicate", reason="duplicate") == 1
    assert value(core_services, counted, verdict="rejected", reason="body_mismatch") == 1


def test_database_gauges_follow_the_store(
    core_services: Services, fake_moneykit: FakeMoneyKit
) -> None:
    for i in range(3):
        fake_moneykit.add_link(f"ok_{i}", institution_id="bank-a", institution_name="Bank A")
    fake_moneykit.add_link(
        "bad_1",
        institution_id="bank-b",
        institution_name="Bank B",
        state="error",
        error_code="auth_expired",
    )
    core_services.discovery.sync_all()
    with core_services.store.write() as session:
        put_named_state(
            session,
            "discovery_suspect",
            {"listed": 1, "known": 9, "missing": 8},
            core_services.links._clock(),
        )
    assert (
        value(core_services, "linkdesk_links", health="healthy", state="connected", error="") == 3
    )
    assert (
        value(
            core_services,
            "linkdesk_links",
            health="needs_relink",
            state="error",
            error="auth_expired",
        )
        == 1
    )
    bank_b = {"institution": "bank-b", "institution_name": "Bank B"}
    assert value(core_services, "linkdesk_bank_links", **bank_b) == 1
    assert value(core_services, "linkdesk_bank_links_in_error", **bank_b) == 1
    assert value(core_services, "linkdesk_discovery_suspect_missing") == 8


@pytest.mark.parametrize(
    ("token", "header", "ok"),
    [
        (None, None, True),
        ("t0ken", None, False),
        ("t0ken", "Bearer t0ken", True),
        ("t0ken", "bearer t0ken", True),
        ("t0ken", "Bearer t0ke", False),
        ("t0ken", "Basic t0ken", False),
    ],
)
def test_the_bearer_token_guards_the_endpoint(
    token: str | None, header: str | None, ok: bool
) -> None:
    assert authorized(token, header) is ok


def test_the_worker_metrics_port_serves_the_registry_behind_its_token(
    core_services: Services,
) -> None:
    server, thread = serve_metrics(core_services.metrics, host="127.0.0.1", port=0, token="s3cret")
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        assert httpx.get(url, timeout=10).status_code == 401
        answer = httpx.get(url, headers={"Authorization": "Bearer s3cret"}, timeout=10)
        assert answer.status_code == 200
        assert "linkdesk_sync_lag_seconds" in answer.text
        assert "s3cret" not in answer.text
        assert httpx.get(url.replace("/metrics", "/other"), timeout=10).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool (Debian's prometheus) is not installed; `make test` installs it",
)
def test_shipped_prometheus_rules_and_config_pass_promtool() -> None:
    rules = sorted(glob.glob(str(ROOT / "deploy/prometheus/*.yml")))
    assert rules, "no rule files in deploy/prometheus"
    checked = subprocess.run(
        ["promtool", "check", "rules", *rules], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    config = subprocess.run(
        ["promtool", "check", "config", str(ROOT / "deploy/prometheus/scrape/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool (Debian's prometheus) is not installed; `make test` installs it",
)
def test_shipped_alerting_rules_fire_where_the_built_in_rules_do() -> None:
    """``promtool test rules``: spike, sync lag, refused webhooks and the max-not-sum of shared
    gauges, on series shaped like the ones Linkdesk exports (tests/prometheus/)."""
    tested = subprocess.run(
        ["promtool", "test", "rules", str(ROOT / "tests/prometheus/linkdesk-alerts.test.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_relinks_and_connect_sessions_are_counted_by_outcome(
    core_services: Services, fake_moneykit: FakeMoneyKit
) -> None:
    agent = Actor("alice@example.com", Role.SUPPORT)
    fake_moneykit.add_link("mk_a", state="error", error_code="auth_expired")
    fake_moneykit.add_link("mk_b", state="error", error_code="auth_expired")
    core_services.discovery.sync_all()

    repaired = core_services.sessions.start_relink(link_id="mk_a", actor=agent)
    fake_moneykit.links["mk_a"].update(state="connected", error_code=None)
    sid = repaired.session_id
    core_services.sessions.apply_log(
        sid, [log_entry(sid, 1, "relink_success", link_id="mk_a")], actor=agent
    )
    abandoned = core_services.sessions.start_relink(link_id="mk_b", actor=agent)
    sid = abandoned.session_id
    core_services.sessions.apply_log(sid, [log_entry(sid, 1, "exit", error=None)], actor=agent)

    assert value(core_services, "linkdesk_relinks_total", outcome="started") == 2
    assert value(core_services, "linkdesk_relinks_total", outcome="succeeded") == 1
    assert value(core_services, "linkdesk_relinks_total", outcome="failed") == 1
    sessions = "linkdesk_connect_sessions_total"
    assert value(core_services, sessions, mode="relink", outcome="started") == 2
    assert value(core_services, sessions, mode="relink", outcome="success") == 1
    assert value(core_services, sessions, mode="relink", outcome="exit") == 1
