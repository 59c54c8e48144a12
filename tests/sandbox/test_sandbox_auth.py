"""Access tokens, bearer auth, introspection and the JWKS."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from moneykit.models import AppClientResponse, CreateAccessTokenResponse, JWKSet
from starlette.applications import Starlette
from starlette.testclient import TestClient

ErrorCheck = Callable[[httpx.Response, int, str], dict[str, Any]]


def test_token_from_form_body(client: TestClient, credentials: tuple[str, str]) -> None:
    client_id, client_secret = credentials
    response = client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": client_secret,
        },
    )
    assert response.status_code == 201
    body = CreateAccessTokenResponse.from_dict(response.json())
    assert body is not None
    assert body.token_type == "bearer"
    assert body.expires_in == 3600
    assert body.access_token


def test_token_from_http_basic(client: TestClient, credentials: tuple[str, str]) -> None:
    basic = base64.b64encode(":".join(credentials).encode()).decode()
    response = client.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 201
    token = response.json()["access_token"]
    assert client.get("/links", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"client_id": "test_client", "client_secret": "wrong"}, 401),
        ({"client_id": "someone_else", "client_secret": "test_secret"}, 401),
        ({}, 400),
        (
            {"grant_type": "password", "client_id": "test_client", "client_secret": "test_secret"},
            400,
        ),
    ],
)
def test_token_refused(
    client: TestClient, moneykit_error: ErrorCheck, form: dict[str, str], status: int
) -> None:
    moneykit_error(client.post("/auth/token", data=form), status, "api_error.auth.unauthorized")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}],
)
def test_bearer_required(
    client: TestClient, moneykit_error: ErrorCheck, headers: dict[str, str]
) -> None:
    for path in ("/links", "/institutions", "/auth/introspect"):
        moneykit_error(client.get(path, headers=headers), 401, "api_error.auth.unauthorized")


def test_token_expires_after_an_hour(
    client: TestClient, auth: dict[str, str], clock: Any, moneykit_error: ErrorCheck
) -> None:
    clock.advance(seconds=3599)
    assert client.get("/links", headers=auth).status_code == 200
    clock.advance(seconds=1)
    moneykit_error(client.get("/links", headers=auth), 401, "api_error.auth.expired_access_token")


def test_introspect(client: TestClient, auth: dict[str, str], credentials: tuple[str, str]) -> None:
    response = client.get("/auth/introspect", headers=auth)
    assert response.status_code == 200
    body = AppClientResponse.from_dict(response.json())
    assert body is not None
    assert body.client_id == credentials[0]
    assert body.scope


def test_jwks_publishes_the_signing_key(client: TestClient, app: Starlette) -> None:
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert JWKSet.from_dict(response.json()) is not None
    keys = response.json()["keys"]
    assert keys and all(k["kty"] == "EC" and k["crv"] == "P-256" for k in keys)
    assert all(k["use"] == "sig" and k["alg"] == "ES256" and k["kid"] for k in keys)

    # A JWT signed with the sandbox's private key verifies against the published public key.
    signing = app.state.sandbox.signing_keys[0]
    token = jwt.encode(
        {"iss": "sandbox"}, signing.private_key, algorithm="ES256", headers={"kid": signing.kid}
    )
    published = next(k for k in keys if k["kid"] == signing.kid)
    claims = jwt.decode(token, jwt.PyJWK(published).key, algorithms=["ES256"])
    assert claims == {"iss": "sandbox"}
