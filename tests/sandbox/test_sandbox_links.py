"""The /links endpoints: paging, reading, updating, reset, refresh and deletion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from moneykit.models import GetAccountsResponse, GetLinksResponse, LinkCommon
from starlette.applications import Starlette
from starlette.testclient import TestClient

ErrorCheck = Callable[[httpx.Response, int, str], dict[str, Any]]


def _all_link_ids(api: TestClient, limit: int = 500) -> tuple[list[str], int]:
    """Walk the cursor to the end; return the ids and the number of pages."""
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = api.get("/links", params=params)
        assert response.status_code == 200
        parsed = GetLinksResponse.from_dict(response.json())
        assert parsed is not None and parsed.links is not None
        ids.extend(link.link_id for link in parsed.links)
        pages += 1
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return ids, pages
        assert pages < 100, "cursor never ends"


def _first_link_id(app: Starlette, state: str = "connected") -> str:
    return next(link.link_id for link in app.state.sandbox.links.values() if link.state == state)


def test_paging_returns_every_link_exactly_once(make_app: Callable[..., Starlette]) -> None:
    app = make_app(demo_links=1234)
    with TestClient(app) as client:
        token = client.post(
            "/auth/token", data={"client_id": "test_client", "client_secret": "test_secret"}
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        ids, pages = _all_link_ids(client, limit=500)
    assert pages == 3
    assert len(ids) == len(set(ids)) == 1234
    assert set(ids) == set(app.state.sandbox.links)


def test_single_page_when_everything_fits(api: TestClient) -> None:
    response = api.get("/links", params={"limit": 5000})
    assert response.status_code == 200
    assert len(response.json()["links"]) == 300
    assert response.json()["next_cursor"] is None


def test_links_made_while_paging_are_not_lost(make_app: Callable[..., Starlette]) -> None:
    app = make_app(demo_links=700)
    with TestClient(app) as client:
        token = client.post(
            "/auth/token", data={"client_id": "test_client", "client_secret": "test_secret"}
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        first = client.get("/links", params={"limit": 500}).json()
        # Delete a link on the second page and add a new one between page requests.
        state = app.state.sandbox
        seen = {link["link_id"] for link in first["links"]}
        doomed = next(link_id for link_id in state.links if link_id not in seen)
        assert client.delete(f"/links/{doomed}").status_code == 204
        session = client.post(
            "/link-session",
            json={
                "customer_user": {"id": "cust_0500"},
                "redirect_uri": "http://localhost:8501/oauth_return",
            },
        ).json()["link_session_token"]
        headers = {"Authorization": f"Bearer {session}"}
        accounts = client.post(
            "/connect-api/institution",
            json={"institution_id": "moneykit-instant-bank"},
            headers=headers,
        ).json()["accounts"]
        new_link = client.post(
            "/connect-api/complete",
            json={"account_ids": [a["account_id"] for a in accounts]},
            headers=headers,
        ).json()["completion"]["link_id"]
        second = client.get("/links", params={"limit": 500, "cursor": first["next_cursor"]}).json()
    rest = [link["link_id"] for link in second["links"]]
    assert second["next_cursor"] is None
    assert doomed not in rest
    assert new_link == rest[-1]
    assert not seen & set(rest)
    assert len(seen) + len(rest) == 700  # 700 demo - 1 deleted + 1 new


@pytest.mark.parametrize("limit", [1, 499, 5001])
def test_links_limit_range(api: TestClient, moneykit_error: ErrorCheck, limit: int) -> None:
    body = moneykit_error(
        api.get("/links", params={"limit": limit}), 422, "api_error.request.validation_failed"
    )
    assert body["validation_errors"][0]["location"] == ["query", "limit"]


@pytest.mark.parametrize("cursor", ["garbage", "eyJ4IjoxfQ", "!!!"])
def test_bad_cursor(api: TestClient, moneykit_error: ErrorCheck, cursor: str) -> None:
    moneykit_error(
        api.get("/links", params={"cursor": cursor}), 422, "api_error.request.validation_failed"
    )


def test_get_link_matches_sdk_model(api: TestClient, app: Starlette) -> None:
    for state in ("connected", "error"):
        link_id = _first_link_id(app, state)
        response = api.get(f"/links/{link_id}")
        assert response.status_code == 200
        link = LinkCommon.from_dict(response.json())
        assert link is not None
        assert link.link_id == link_id
        assert link.state.value == state
        assert link.institution_avatar.startswith("http://localhost:8611/assets/institutions/")
        assert link.products.accounts is not None
        if link.products.transactions is not None:
            assert link.products.transactions.has_history is True


def test_accounts(api: TestClient, app: Starlette) -> None:
    link_id = _first_link_id(app)
    response = api.get(f"/links/{link_id}/accounts")
    assert response.status_code == 200
    parsed = GetAccountsResponse.from_dict(response.json())
    assert parsed is not None
    assert 1 <= len(parsed.accounts) <= 4
    assert parsed.link.link_id == link_id
    one = parsed.accounts[0].account_id
    filtered = api.get(f"/links/{link_id}/accounts", params={"account_ids": one}).json()
    assert [a["account_id"] for a in filtered["accounts"]] == [one]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/links/mk_missing"),
        ("PATCH", "/links/mk_missing"),
        ("DELETE", "/links/mk_missing"),
        ("POST", "/links/mk_missing/reset"),
        ("GET", "/links/mk_missing/accounts"),
        ("POST", "/links/mk_missing/products"),
    ],
)
def test_unknown_link(api: TestClient, moneykit_error: ErrorCheck, method: str, path: str) -> None:
    body = {"products": ["accounts"]} if path.endswith("products") else {}
    moneykit_error(api.request(method, path, json=body), 404, "link_error.not_found")


def test_reset_forces_auth_expired(api: TestClient, app: Starlette) -> None:
    link_id = _first_link_id(app)
    response = api.post(f"/links/{link_id}/reset")
    assert response.status_code == 200
    link = LinkCommon.from_dict(response.json())
    assert link is not None
    assert (link.state.value, link.error_code and link.error_code.value) == (
        "error",
        "auth_expired",
    )
    assert api.get(f"/links/{link_id}").json()["error_code"] == "auth_expired"


def test_deleted_link(api: TestClient, app: Starlette, moneykit_error: ErrorCheck) -> None:
    link_id = _first_link_id(app)
    response = api.delete(f"/links/{link_id}")
    assert response.status_code == 204
    assert response.content == b""
    shown = api.get(f"/links/{link_id}")
    assert shown.status_code == 200
    assert shown.json()["state"] == "deleted"
    moneykit_error(api.get(f"/links/{link_id}/accounts"), 410, "link_error.deleted")
    moneykit_error(api.post(f"/links/{link_id}/reset"), 410, "link_error.deleted")
    moneykit_error(api.delete(f"/links/{link_id}"), 410, "link_error.deleted")
    listed = {link["link_id"] for link in api.get("/links").json()["links"]}
    assert link_id not in listed


def test_update_link_webhook_and_tags(api: TestClient, app: Starlette) -> None:
    link_id = _first_link_id(app)
    updated = api.patch(
        f"/links/{link_id}",
        json={"webhook": "http://localhost:8501/hooks", "link_tags": ["customer:cust_0001"]},
    )
    assert updated.status_code == 200
    assert updated.json()["webhook"] == "http://localhost:8501/hooks"
    assert updated.json()["link_tags"] == ["customer:cust_0001"]
    # Only the keys sent change; an explicit null clears the webhook.
    cleared = api.patch(f"/links/{link_id}", json={"webhook": None})
    assert cleared.json()["webhook"] is None
    assert cleared.json()["link_tags"] == ["customer:cust_0001"]


def test_refresh_products(api: TestClient, app: Starlette, moneykit_error: ErrorCheck) -> None:
    link_id = _first_link_id(app)
    response = api.post(f"/links/{link_id}/products", json={"products": ["accounts"]})
    assert response.status_code == 202
    assert LinkCommon.from_dict(response.json()) is not None

    broken = _first_link_id(app, "error")
    body = moneykit_error(
        api.post(f"/links/{broken}/products", json={"products": ["accounts"]}),
        422,
        "link_error.bad_state",
    )
    assert body["link_error_code"] == api.get(f"/links/{broken}").json()["error_code"]

    not_granted = next(
        link_id
        for link_id, link in app.state.sandbox.links.items()
        if link.state == "connected" and "identity" not in link.products
    )
    moneykit_error(
        api.post(f"/links/{not_granted}/products", json={"products": ["identity"]}),
        403,
        "link_error.forbidden_action",
    )
    moneykit_error(
        api.post(f"/links/{link_id}/products", json={"products": []}),
        422,
        "api_error.request.validation_failed",
    )
