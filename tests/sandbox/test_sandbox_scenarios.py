"""Scripted demo scenarios: timetables on the sandbox clock that change links and send webhooks."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sandbox.scenarios import SCENARIOS
from sandbox.webhooks import WebhookConfig
from tests.sandbox.conftest import FakeClock, Receiver


@pytest.fixture
def hooked_app(make_app: Callable[..., Starlette], receiver: Receiver) -> Starlette:
    # Demo links carry the receiver's URL, as the company's app gave them one.
    return make_app(
        demo_links=400,
        demo_webhook_url=receiver.url,
        refresh_delay_s=0,
        webhook_config=WebhookConfig(time_scale=10_000),
    )


@pytest.fixture
def hooked(hooked_app: Starlette) -> Any:
    with TestClient(hooked_app, base_url="http://localhost:8611") as test_client:
        yield test_client


def _links_at(app: Starlette, institution_id: str) -> Counter[tuple[str, str | None]]:
    state = app.state.sandbox
    return Counter(
        (link.state, link.error_code)
        for link in state.links.values()
        if link.institution_id == institution_id
    )


def _advance_and_tick(client: TestClient, clock: FakeClock, seconds: float) -> dict[str, Any]:
    clock.advance(seconds=seconds)
    response = client.get("/_sandbox/scenarios")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_catalogue_lists_each_scenario_with_the_largest_bank_it_fits(
    client: TestClient, app: Starlette
) -> None:
    body = client.get("/_sandbox/scenarios").json()
    assert {s["name"] for s in body["scenarios"]} == set(SCENARIOS)
    assert body["runs"] == []
    state = app.state.sandbox
    chosen = {s["name"]: s["default_institution_id"] for s in body["scenarios"]}
    assert state.institutions[chosen["oauth_outage"]].auth == "oauth"
    assert state.institutions[chosen["credentials_rotated"]].auth == "credentials"
    for listed in body["scenarios"]:  # the name is given so the Demo page need not look it up
        bank = state.institutions[listed["default_institution_id"]]
        assert listed["default_institution_name"] == bank.name
    connected = Counter(
        link.institution_id for link in state.links.values() if link.state == "connected"
    )
    credential_banks = [i for i, inst in state.institutions.items() if inst.auth == "credentials"]
    assert connected[chosen["credentials_rotated"]] == max(connected[i] for i in credential_banks)


def test_oauth_outage_breaks_in_waves_then_recovers_with_a_webhook_per_change(
    hooked: TestClient, hooked_app: Starlette, clock: FakeClock, receiver: Receiver
) -> None:
    bank = "moneykit-oauth-bank"
    before = _links_at(hooked_app, bank)
    connected = before[("connected", None)]
    already_failing = before[("error", "institution_error")]
    assert connected > 5

    started = hooked.post("/_sandbox/scenarios/oauth_outage", json={"speed": 1})
    assert started.status_code == 201, started.text
    run = started.json()
    assert (run["institution_id"], run["status"], run["steps_done"]) == (bank, "running", 1)
    assert bank in hooked_app.state.sandbox.down_institutions

    # Halfway through the waves: some links are down, not all.
    body = _advance_and_tick(hooked, clock, 20)
    broken = _links_at(hooked_app, bank)[("error", "institution_error")] - already_failing
    assert 0 < broken < connected
    assert body["runs"][0]["links_still_broken"] == broken

    # End of the waves: every link that was connected is down.
    _advance_and_tick(hooked, clock, 30)
    assert _links_at(hooked_app, bank)[("error", "institution_error")] == (
        connected + already_failing
    )

    # After the timetable: all recovered, the bank is back, the run is finished.
    body = _advance_and_tick(hooked, clock, 70)
    assert _links_at(hooked_app, bank) == before
    assert bank not in hooked_app.state.sandbox.down_institutions
    final = body["runs"][0]
    assert final["status"] == "finished"
    assert final["steps_done"] == final["steps_total"]
    assert final["links_changed"] == 2 * connected
    assert final["links_still_broken"] == 0

    # Each change went out as a signed link.state_changed webhook, in order per link.
    received = receiver.wait_for(2 * connected)
    payloads = [json.loads(r["body"]) for r in received]
    assert {p["webhook_event"] for p in payloads} == {"link.state_changed"}
    per_link: dict[str, list[str]] = {}
    for payload in payloads:
        per_link.setdefault(payload["link_id"], []).append(payload["state"])
    assert len(per_link) == connected
    assert all(states == ["error", "connected"] for states in per_link.values())
    assert all(r["headers"].get("MoneyKit-Signature") for r in received)


def test_credentials_rotated_leaves_some_links_for_support(
    hooked: TestClient, hooked_app: Starlette, clock: FakeClock
) -> None:
    started = hooked.post("/_sandbox/scenarios/credentials_rotated", json={"speed": 10})
    assert started.status_code == 201
    bank = started.json()["institution_id"]
    connected = (
        _links_at(hooked_app, bank)[("connected", None)]
        + _links_at(hooked_app, bank)[("error", "auth_expired")]
    )
    _advance_and_tick(hooked, clock, 2.5)  # all five waves at ten times the pace
    expired_peak = started.json()["links_still_broken"]
    body = _advance_and_tick(hooked, clock, 20)
    run = body["runs"][0]
    assert run["status"] == "finished"
    broken_total = (run["links_changed"] + run["links_still_broken"]) // 2
    assert broken_total >= 1 and broken_total <= connected
    assert expired_peak <= broken_total
    # About a third stay expired for support to repair; most customers relinked.
    assert 0 < run["links_still_broken"] < broken_total
    still_expired = [
        link
        for link in hooked_app.state.sandbox.links.values()
        if link.institution_id == bank and link.error_code == "auth_expired"
    ]
    assert len(still_expired) >= run["links_still_broken"]


def test_stop_freezes_a_run_and_reset_forgets_it(
    client: TestClient, app: Starlette, clock: FakeClock
) -> None:
    run = client.post("/_sandbox/scenarios/oauth_outage").json()
    _advance_and_tick(client, clock, 12)
    assert client.delete("/_sandbox/scenarios").json() == {"stopped": 1}
    frozen = _links_at(app, run["institution_id"])
    body = _advance_and_tick(client, clock, 300)
    assert body["runs"][0]["status"] == "stopped"
    assert _links_at(app, run["institution_id"]) == frozen  # nothing ran after the stop

    client.post("/_sandbox/reset", json={})
    assert client.get("/_sandbox/scenarios").json()["runs"] == []


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/_sandbox/scenarios/volcano", {}, "No scenario named 'volcano'"),
        ("/_sandbox/scenarios/oauth_outage", {"speed": 0}, "greater than or equal to 0.1"),
        (
            "/_sandbox/scenarios/oauth_outage",
            {"institution_id": "moneykit-creds-bank"},
            "wrong login method",
        ),
    ],
)
def test_bad_starts_are_refused_with_a_reason(
    client: TestClient, path: str, body: dict[str, Any], message: str
) -> None:
    response = client.post(path, json=body)
    assert response.status_code == 422
    assert message in response.text
    assert client.get("/_sandbox/scenarios").json()["runs"] == []


def test_one_run_per_bank_at_a_time(client: TestClient) -> None:
    assert client.post("/_sandbox/scenarios/oauth_outage").status_code == 201
    again = client.post("/_sandbox/scenarios/oauth_outage")
    assert again.status_code == 422
    assert "already running" in again.text
