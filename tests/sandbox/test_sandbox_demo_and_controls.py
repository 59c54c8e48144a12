"""Seeded demo data and the /_sandbox/ test controls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sandbox.demo import DEMO_ERROR_SHARES, USER_ACTION_ERRORS
from sandbox.institutions import CATALOGUE

ErrorCheck = Callable[[httpx.Response, int, str], dict[str, Any]]


def _snapshot(app: Starlette) -> list[dict[str, Any]]:
    with TestClient(app, base_url="http://localhost:8611") as client:
        token = client.post(
            "/auth/token", data={"client_id": "test_client", "client_secret": "test_secret"}
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        listing = client.get("/links", params={"limit": 5000}).json()["links"]
        return [
            {
                "listed": item,
                "link": client.get(f"/links/{item['link_id']}").json(),
                "accounts": client.get(f"/links/{item['link_id']}/accounts").json()["accounts"],
            }
            for item in listing
        ]


def test_same_seed_same_data(make_app: Callable[..., Starlette]) -> None:
    first = _snapshot(make_app(seed=7, demo_links=40))
    assert first == _snapshot(make_app(seed=7, demo_links=40))
    assert first != _snapshot(make_app(seed=8, demo_links=40))


def test_demo_link_mix(app: Starlette, clock: Any) -> None:
    links = list(app.state.sandbox.links.values())
    assert len(links) == 300
    errors = Counter(link.error_code for link in links if link.state == "error")
    expected = {code: round(300 * share) for code, share in DEMO_ERROR_SHARES}
    assert errors == expected
    assert Counter(link.state for link in links)["connected"] == 300 - sum(expected.values())

    assert {link.institution_id for link in links} == {i.institution_id for i in CATALOGUE}
    by_id = {inst.institution_id: inst for inst in CATALOGUE}
    for link in links:
        if link.error_code in USER_ACTION_ERRORS:
            assert by_id[link.institution_id].auth == "credentials", "relink needs a login screen"
    customers: Counter[str] = Counter()
    for link in links:
        assert link.link_tags is not None
        tags = [t for t in link.link_tags if t.startswith("customer:")]
        assert tags == [f"customer:{link.customer_id}"]
        customers[link.customer_id] += 1
        assert 1 <= len(link.accounts) <= 4
        assert clock.now - timedelta(days=271) < link.created_at < clock.now
    assert len(customers) == 150

    created = [link.created_at for link in links]
    assert created == sorted(created), "oldest first, so /links pages in creation order"
    assert max(created) - min(created) > timedelta(days=120), "spread over months"


def test_health(client: TestClient) -> None:
    response = client.get("/_sandbox/health")
    # The service name is what Linkdesk's demo mode checks before it acts on a server.
    assert (response.status_code, response.json()) == (
        200,
        {"ok": True, "service": "moneykit-sandbox"},
    )


def test_reset_restores_the_seeded_state(make_app: Callable[..., Starlette]) -> None:
    app = make_app(demo_links=40)
    before = _snapshot(app)
    with TestClient(app) as api:
        token = api.post(
            "/auth/token", data={"client_id": "test_client", "client_secret": "test_secret"}
        ).json()["access_token"]
        api.headers["Authorization"] = f"Bearer {token}"
        api.delete(f"/links/{before[0]['listed']['link_id']}")
        api.post(f"/links/{before[1]['listed']['link_id']}/reset")
        assert _snapshot(app) != before

        response = api.post("/_sandbox/reset")
        assert response.status_code == 200
        assert response.json()["links"] == 40
        assert _snapshot(app) == before
        # The client's token survives a reset.
        assert api.get("/links").status_code == 200

        smaller = api.post("/_sandbox/reset", json={"seed": 3, "demo_links": 10}).json()
        assert (smaller["seed"], smaller["links"]) == (3, 10)
        assert len(app.state.sandbox.links) == 10


def test_force_link_state(app: Starlette, api: TestClient, moneykit_error: ErrorCheck) -> None:
    link_id = next(iter(app.state.sandbox.links))
    forced = api.post(
        f"/_sandbox/links/{link_id}/state", json={"state": "error", "error_code": "auth_expired"}
    )
    assert forced.status_code == 200
    assert (forced.json()["state"], forced.json()["error_code"]) == ("error", "auth_expired")

    healthy = api.post(f"/_sandbox/links/{link_id}/state", json={"state": "connected"}).json()
    assert (healthy["state"], healthy["error_code"]) == ("connected", None)

    api.post(f"/_sandbox/links/{link_id}/state", json={"state": "deleted"})
    moneykit_error(api.get(f"/links/{link_id}/accounts"), 410, "link_error.deleted")


@pytest.mark.parametrize(
    "body",
    [
        {"state": "error"},
        {"state": "connected", "error_code": "auth_expired"},
        {"state": "sleeping"},
        {"state": "error", "error_code": "gremlins"},
    ],
)
def test_force_link_state_validates(
    app: Starlette, client: TestClient, moneykit_error: ErrorCheck, body: dict[str, Any]
) -> None:
    link_id = next(iter(app.state.sandbox.links))
    moneykit_error(
        client.post(f"/_sandbox/links/{link_id}/state", json=body),
        422,
        "api_error.request.validation_failed",
    )


def test_force_state_of_unknown_link(client: TestClient, moneykit_error: ErrorCheck) -> None:
    response = client.post("/_sandbox/links/mk_nope/state", json={"state": "connected"})
    moneykit_error(response, 404, "link_error.not_found")
