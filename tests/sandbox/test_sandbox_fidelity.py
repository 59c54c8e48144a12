"""Places where the sandbox must answer as the real MoneyKit does: API version header, token
endpoint body and credentials, and error bodies the official SDK's models accept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from moneykit.models import (
    CreateAccessTokenResponse,
    LinkErrorBadStateResponse,
    LinkErrorNotFoundResponse,
)
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.sandbox.conftest import ConnectDriver

ErrorCheck = Callable[[httpx.Response, int, str], dict[str, Any]]


def _link_in(app: Starlette, state: str) -> str:
    return next(i for i, link in app.state.sandbox.links.items() if link.state == state)


# ------------------------------------------------------------------------- MoneyKit-Version
def test_supported_or_absent_api_version_is_accepted(api: TestClient) -> None:
    assert api.get("/links", headers={"MoneyKit-Version": "2023-02-18"}).status_code == 200
    assert "moneykit-version" not in {k.lower() for k in api.headers}
    assert api.get("/links").status_code == 200


def test_bogus_api_version_is_refused(
    api: TestClient, credentials: tuple[str, str], moneykit_error: ErrorCheck
) -> None:
    body = moneykit_error(
        api.get("/links", headers={"MoneyKit-Version": "1999-01-01"}),
        422,
        "api_error.request.validation_failed",
    )
    assert body["validation_errors"][0]["location"] == ["header", "MoneyKit-Version"]
    client_id, client_secret = credentials
    moneykit_error(
        api.post(
            "/auth/token",
            data={"client_id": client_id, "client_secret": client_secret},
            headers={"MoneyKit-Version": "latest"},
        ),
        422,
        "api_error.request.validation_failed",
    )


# ------------------------------------------------------------------------------ /auth/token
def test_token_endpoint_refuses_json(
    client: TestClient, credentials: tuple[str, str], moneykit_error: ErrorCheck
) -> None:
    client_id, client_secret = credentials
    moneykit_error(
        client.post(
            "/auth/token",
            json={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            },
        ),
        422,
        "api_error.request.validation_failed",
    )


def test_token_from_client_id_and_secret_headers(
    client: TestClient, credentials: tuple[str, str], moneykit_error: ErrorCheck
) -> None:
    client_id, client_secret = credentials
    response = client.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"X-Client-Id": client_id, "X-Client-Secret": client_secret},
    )
    assert response.status_code == 201, response.text
    token = CreateAccessTokenResponse.from_dict(response.json())
    assert token is not None
    assert client.get(
        "/links", headers={"Authorization": f"Bearer {token.access_token}"}
    ).is_success
    moneykit_error(
        client.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            headers={"X-Client-Id": client_id, "X-Client-Secret": "wrong"},
        ),
        401,
        "api_error.auth.unauthorized",
    )


# ------------------------------------------------------------------------------ error bodies
def test_bad_state_carries_a_code_the_sdk_accepts(
    api: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    moneykit_error: ErrorCheck,
) -> None:
    completion = connect(new_session()).link_all()
    link_id = completion["link_id"]
    assert api.get(f"/links/{link_id}").json()["state"] == "awaiting_token_exchange"
    body = moneykit_error(api.get(f"/links/{link_id}/transactions"), 422, "link_error.bad_state")
    parsed = LinkErrorBadStateResponse.from_dict(body)
    assert parsed is not None
    assert parsed.link_error_code == "incomplete"


def test_unknown_account_is_link_not_found(
    api: TestClient, app: Starlette, moneykit_error: ErrorCheck
) -> None:
    link_id = _link_in(app, "connected")
    body = moneykit_error(
        api.get(f"/links/{link_id}/accounts/acc_nope"), 404, "link_error.not_found"
    )
    assert LinkErrorNotFoundResponse.from_dict(body) is not None


def test_unknown_path_and_wrong_method_in_moneykit_shape(
    client: TestClient, moneykit_error: ErrorCheck
) -> None:
    body = moneykit_error(client.get("/nowhere"), 404, "api_error.not_found")
    assert body["request_id"]
    moneykit_error(client.put("/links"), 405, "api_error.method_not_allowed")


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_paging_size_echoes_the_size_asked(api: TestClient, app: Starlette, size: int) -> None:
    link_id = next(
        i
        for i, link in app.state.sandbox.links.items()
        if link.state == "connected" and "transactions" in link.products
    )
    response = api.get(
        f"/links/{link_id}/transactions",
        params={"size": size, "page": 1000, "start_date": "2025-01-01"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == size
    assert body["transactions"] == []


# ---------------------------------------------------------------------------------- scopes
def _token(client: TestClient, credentials: tuple[str, str], scope: str | None) -> httpx.Response:
    form = dict(zip(("client_id", "client_secret"), credentials, strict=True))
    if scope is not None:
        form["scope"] = scope
    return client.post("/auth/token", data={"grant_type": "client_credentials", **form})


def test_token_scopes_are_enforced_per_endpoint(
    client: TestClient, credentials: tuple[str, str], moneykit_error: ErrorCheck
) -> None:
    token = _token(client, credentials, "institutions:read").json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/institutions", headers=headers).status_code == 200
    session = {"customer_user": {"id": "cust_1"}, "redirect_uri": "http://localhost:1/oauth_return"}
    moneykit_error(
        client.post("/link-session", json=session, headers=headers),
        403,
        "api_error.auth.insufficient_scope",
    )
    moneykit_error(client.get("/links", headers=headers), 403, "api_error.auth.insufficient_scope")
    introspected = client.get("/auth/introspect", headers=headers).json()
    assert introspected["scope"] == "institutions:read"


def test_no_scope_grants_the_apps_scopes(client: TestClient, credentials: tuple[str, str]) -> None:
    token = _token(client, credentials, None).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    granted = set(client.get("/auth/introspect", headers=headers).json()["scope"].split())
    assert {"links:read", "link_session:write", "institutions:read"} <= granted
    session = {"customer_user": {"id": "cust_1"}, "redirect_uri": "http://localhost:1/oauth_return"}
    assert client.post("/link-session", json=session, headers=headers).status_code == 201


def test_unknown_scope_is_refused(
    client: TestClient, credentials: tuple[str, str], moneykit_error: ErrorCheck
) -> None:
    moneykit_error(
        _token(client, credentials, "links:read payments:write"),
        400,
        "api_error.auth.unauthorized",
    )


# ---------------------------------------------------------------------------- redirect_uri
@pytest.mark.parametrize(
    "uri",
    [
        "https://evil.example.net/cb?x=1",
        "https://evil.example.net/oauth_return",
        "http://localhost:8501/oauth_return?x=1",
        "http://localhost:8501/elsewhere",
        "http://localhost/oauth_return",
    ],
)
def test_unregistered_redirect_uri_is_refused(
    api: TestClient, moneykit_error: ErrorCheck, uri: str
) -> None:
    moneykit_error(
        api.post("/link-session", json={"customer_user": {"id": "cust_1"}, "redirect_uri": uri}),
        403,
        "link_session_error.forbidden_config",
    )


@pytest.mark.parametrize(
    "uri", ["http://localhost:8501/oauth_return", "http://127.0.0.1:49152/oauth_return"]
)
def test_local_oauth_return_pages_are_registered(api: TestClient, uri: str) -> None:
    response = api.post(
        "/link-session", json={"customer_user": {"id": "cust_1"}, "redirect_uri": uri}
    )
    assert response.status_code == 201, response.text


def test_registered_redirect_uris_are_configurable(
    make_app: Callable[..., Starlette], credentials: tuple[str, str]
) -> None:
    app = make_app(redirect_uris=["https://app.example.test/return"])
    with TestClient(app) as client:
        token = _token(client, credentials, None).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def create(uri: str) -> int:
            body = {"customer_user": {"id": "cust_1"}, "redirect_uri": uri}
            return client.post("/link-session", json=body, headers=headers).status_code

        assert create("https://app.example.test/return") == 201
        assert create("http://localhost:8501/oauth_return") == 403


# ------------------------------------------------------------------ accounts like other data
def test_accounts_refused_before_token_exchange_like_other_data(
    api: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    moneykit_error: ErrorCheck,
) -> None:
    link_id = connect(new_session()).link_all()["link_id"]
    for path in ("accounts", "accounts/numbers", "transactions"):
        body = moneykit_error(api.get(f"/links/{link_id}/{path}"), 422, "link_error.bad_state")
        assert body["link_error_code"] == "incomplete"


def test_accounts_refused_when_the_product_is_not_granted(
    api: TestClient, app: Starlette, moneykit_error: ErrorCheck
) -> None:
    link = next(link for link in app.state.sandbox.links.values() if link.state == "connected")
    del link.products["accounts"]
    moneykit_error(api.get(f"/links/{link.link_id}/accounts"), 403, "link_error.forbidden_action")


# ------------------------------------------------------------------- provider-prefixed imports
@pytest.mark.parametrize("institution_id", ["mx.chase", "finicity.101732", "plaid.ins_3"])
def test_import_accepts_provider_prefixed_ids(
    api: TestClient, institution_id: str, moneykit_error: ErrorCheck
) -> None:
    def run(institution_id: str = institution_id) -> httpx.Response:
        body = {
            "customer_user": {"id": "cust_import_1"},
            "institution_id": institution_id,
            "accounts": [
                {
                    "account_id": "their_acc_1",
                    "name": "Checking",
                    "type": "checking",
                    "balances": {"current": 10, "currency": "USD"},
                }
            ],
            "transactions": [],
        }
        return api.post("/links/import", json=body)

    first, second = run().json(), run().json()
    assert first["institution_id"] == second["institution_id"]
    assert api.get(f"/institutions/{first['institution_id']}").status_code == 200
    moneykit_error(run("nobody.chase"), 404, "institution_error.not_found")
