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
