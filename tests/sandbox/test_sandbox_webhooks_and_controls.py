"""Signed webhooks (real HTTP to a local receiver), retries, faults, rate limits and controls."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sandbox.webhooks import WebhookConfig
from tests.sandbox.conftest import PUBLIC_URL, ConnectDriver, FakeClock, Receiver


@pytest.fixture
def app(make_app: Callable[..., Starlette]) -> Starlette:
    # The two-hour retry schedule (30 s, 60 s, ... doubling) squeezed 10 000 times.
    return make_app(
        refresh_delay_s=0,
        webhook_config=WebhookConfig(time_scale=10_000, first_backoff_s=30, retry_window_s=7200),
    )


def _hooked_link(
    api: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    url: str,
) -> str:
    token = new_session(webhook=url, link_tags=["customer:cust_hook"])
    completion = connect(token).link_all()
    api.post(
        "/link-session/exchange-token",
        json={"exchangeable_token": completion["exchangeable_token"]},
    ).raise_for_status()
    link_id: str = completion["link_id"]
    return link_id


def _verify(client: TestClient, request: dict[str, Any]) -> dict[str, Any]:
    """What a receiver must do (protocol doc §5.3), with PyJWT against the sandbox JWKS."""
    signature = request["headers"]["MoneyKit-Signature"]
    header = jwt.get_unverified_header(signature)
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    jwks = client.get("/.well-known/jwks.json").json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    key = jwt.PyJWK(jwk).key
    claims: dict[str, Any] = jwt.decode(signature, key=key, algorithms=["ES256"])
    assert claims["iss"] == PUBLIC_URL
    assert claims["request_body_sha256"] == hashlib.sha256(request["body"]).hexdigest()
    assert "exp" not in claims
    return claims


def test_state_changes_are_signed_webhooks(
    api: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    link_id = _hooked_link(api, new_session, connect, receiver.url)
    api.post(f"/links/{link_id}/reset").raise_for_status()
    requests = receiver.wait_for(3)  # awaiting_token_exchange, connected, error
    bodies = [json.loads(r["body"]) for r in requests]
    assert [b["state"] for b in bodies] == ["awaiting_token_exchange", "connected", "error"]
    assert bodies[-1]["error"] == "auth_expired"
    for request, body in zip(requests, bodies, strict=True):
        assert body["webhook_event"] == "link.state_changed"
        assert (body["webhook_major_version"], body["webhook_minor_version"]) == (1, 0)
        assert body["link_id"] == link_id
        assert body["link_tags"] == ["customer:cust_hook"]
        assert request["headers"]["MoneyKit-Delivery-Attempt"] == "1"
        assert request["headers"]["MoneyKit-Delivery-Token"]
        claims = _verify(api, request)
        assert claims["iat"] == int(clock.now.timestamp())


def test_refresh_sends_product_refresh_and_updates_available(
    api: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    receiver: Receiver,
) -> None:
    link_id = _hooked_link(api, new_session, connect, receiver.url)
    receiver.wait_for(2)
    assert (
        api.post(f"/links/{link_id}/products", json={"products": ["transactions"]}).status_code
        == 202
    )
    requests = receiver.wait_for(5)
    events = [json.loads(r["body"]) for r in requests[2:]]
    assert [(e["webhook_event"], e.get("product"), e.get("state")) for e in events] == [
        ("link.product_refresh", "transactions", "in_progress"),
        ("link.product_refresh", "transactions", "completed"),
        ("transactions.updates_available", None, None),
    ]


def test_retries_back_off_then_give_up(
    api: TestClient,
    client: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    receiver: Receiver,
) -> None:
    link_id = _hooked_link(api, new_session, connect, receiver.url)
    receiver.wait_for(2)
    receiver.script.extend([500] * 50)
    key = "idem-retry-1"
    response = api.post(
        f"/webhooks/test/link/{link_id}",
        json={"webhook_event": "link.state_changed", "webhook_idempotency_key": key},
    )
    assert response.status_code == 200
    token = response.json()["delivery_token"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        records = [
            r
            for r in client.get("/_sandbox/webhooks").json()["deliveries"]
            if r["delivery_token"] == token
        ]
        if records and records[-1]["outcome"] == "gave_up":
            break
        time.sleep(0.05)
    assert [r["attempt"] for r in records] == list(range(1, len(records) + 1))
    # 30 s doubling within two hours: attempts at 0, 30, 90, ... 3810 s; the next would pass 7200.
    assert len(records) == 8
    assert records[-1]["outcome"] == "gave_up"
    retried = [r for r in receiver.received[2:]]
    assert len({r["headers"]["MoneyKit-Delivery-Token"] for r in retried}) == 1
    assert {json.loads(r["body"])["webhook_idempotency_key"] for r in retried} == {key}
    assert [r["headers"]["MoneyKit-Delivery-Attempt"] for r in retried] == [
        str(n) for n in range(1, 9)
    ]


def test_test_webhook_needs_a_url(api: TestClient) -> None:
    link_id = api.get("/links", params={"limit": 500}).json()["links"][0]["link_id"]
    response = api.post(
        f"/webhooks/test/link/{link_id}",
        json={"webhook_event": "product.state_changed", "webhook_idempotency_key": "k"},
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "link_error.bad_config"


def test_key_rotation_keeps_old_kid(
    api: TestClient,
    client: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    receiver: Receiver,
) -> None:
    old = {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}
    rotated = client.post("/_sandbox/keys/rotate").json()
    kids = {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}
    assert old < kids and rotated["kid"] in kids
    _hooked_link(api, new_session, connect, receiver.url)
    request = receiver.wait_for(1)[0]
    assert (
        jwt.get_unverified_header(request["headers"]["MoneyKit-Signature"])["kid"] == rotated["kid"]
    )
    _verify(api, request)


def test_webhook_faults_drop_and_duplicate(
    api: TestClient,
    client: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    receiver: Receiver,
) -> None:
    link_id = _hooked_link(api, new_session, connect, receiver.url)
    receiver.wait_for(2)
    client.post("/_sandbox/webhooks/settings", json={"duplicate_rate": 1.0}).raise_for_status()
    api.post(f"/links/{link_id}/reset").raise_for_status()
    dupes = receiver.wait_for(4)[2:]
    assert (
        dupes[0]["headers"]["MoneyKit-Delivery-Token"]
        == dupes[1]["headers"]["MoneyKit-Delivery-Token"]
    )

    client.post("/_sandbox/webhooks/settings", json={"drop_rate": 1.0}).raise_for_status()
    before = len(client.get("/_sandbox/webhooks").json()["deliveries"])
    client.post(f"/_sandbox/links/{link_id}/state", json={"state": "connected"}).raise_for_status()
    # Wait for the sandbox to have decided this delivery, not for a time to pass.
    deadline = time.monotonic() + 10
    deliveries = []
    while time.monotonic() < deadline:
        deliveries = client.get("/_sandbox/webhooks").json()["deliveries"]
        if len(deliveries) > before:
            break
        time.sleep(0.02)
    assert [r["outcome"] for r in deliveries[before:]] == ["dropped"]
    assert len(receiver.received) == 4


def test_rate_limit_per_link_with_retry_after(api: TestClient, clock: FakeClock) -> None:
    link_id = api.get("/links", params={"limit": 500}).json()["links"][0]["link_id"]
    for _ in range(4):
        assert api.get(f"/links/{link_id}/accounts").status_code == 200
    limited = api.get(f"/links/{link_id}/accounts")
    assert limited.status_code == 429
    assert limited.json()["error_code"] == "api_error.rate_limit_exceeded"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    clock.advance(seconds=61)
    assert api.get(f"/links/{link_id}/accounts").status_code == 200


def test_rate_limits_can_be_turned_off(api: TestClient, client: TestClient) -> None:
    assert client.get("/_sandbox/rate-limits").json() == {"enabled": True}
    client.post("/_sandbox/rate-limits", json={"enabled": False}).raise_for_status()
    link_id = api.get("/links", params={"limit": 500}).json()["links"][0]["link_id"]
    assert all(api.get(f"/links/{link_id}/accounts").status_code == 200 for _ in range(10))


def test_product_refresh_is_limited_per_product(api: TestClient) -> None:
    rows = api.get("/links", params={"limit": 500}).json()["links"]
    link_id = next(
        r["link_id"]
        for r in rows
        if api.get(f"/links/{r['link_id']}").json()["state"] == "connected"
    )
    assert (
        api.post(f"/links/{link_id}/products", json={"products": ["accounts"]}).status_code == 202
    )
    again = api.post(f"/links/{link_id}/products", json={"products": ["accounts"]})
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) > 3000


def test_fault_injection_is_seeded(api: TestClient, client: TestClient) -> None:
    client.post(
        "/_sandbox/faults",
        json={"seed": 7, "rules": [{"pattern": "^GET /institutions/", "error_rate": 0.5}]},
    ).raise_for_status()
    first = [api.get("/institutions/moneykit-creds-bank").status_code for _ in range(20)]
    client.post(
        "/_sandbox/faults",
        json={"seed": 7, "rules": [{"pattern": "^GET /institutions/", "error_rate": 0.5}]},
    ).raise_for_status()
    second = [api.get("/institutions/moneykit-creds-bank").status_code for _ in range(20)]
    assert first == second and set(first) == {200, 503}

    client.post(
        "/_sandbox/faults",
        json={"rules": [{"pattern": "^GET /links$", "rate_limit_rate": 1, "retry_after_s": 7}]},
    ).raise_for_status()
    limited = api.get("/links")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    client.delete("/_sandbox/faults").raise_for_status()
    assert api.get("/links").status_code == 200


def test_institution_down(
    api: TestClient,
    client: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
) -> None:
    link_id = _hooked_link(api, new_session, connect, "http://127.0.0.1:9/none")
    changed = client.post(
        "/_sandbox/institutions/moneykit-creds-bank/status", json={"down": True}
    ).json()
    assert link_id in changed["links_changed"]
    link = api.get(f"/links/{link_id}").json()
    assert (link["state"], link["error_code"]) == ("error", "institution_error")
    refresh = api.post(f"/links/{link_id}/products", json={"products": ["accounts"]})
    assert refresh.status_code == 422
    assert refresh.json()["link_error_code"] == "institution_error"

    picker = connect(new_session()).session().json()["institutions"]
    assert next(i for i in picker if i["id"] == "moneykit-creds-bank")["down"] is True
    login = connect(new_session()).login("moneykit-creds-bank", "user_good", "pass_good")
    assert login.status_code == 503
    assert login.json()["error"]["error_id"] == "institution_down"

    client.post("/_sandbox/institutions/moneykit-creds-bank/status", json={"down": False})
    assert api.get(f"/links/{link_id}").json()["state"] == "connected"
