"""Products are fetched on prefetch or refresh, refreshes run, land or fail, and say so by webhook.

Refreshes here never land by themselves (``refresh_delay_s`` is a minute of real time): each test
lands them with ``POST /_sandbox/products/settle``, so what is *in progress* can be looked at.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from moneykit.models.product_state_changed_webhook import ProductStateChangedWebhook
from moneykit.models.transaction_updates_available_webhook import (
    TransactionUpdatesAvailableWebhook,
)
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.sandbox.conftest import ConnectDriver, Receiver


@pytest.fixture
def app(make_app: Callable[..., Starlette]) -> Starlette:
    return make_app(refresh_delay_s=60, rate_limits=False)


def _link(
    api: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    products: dict[str, dict[str, Any]],
    webhook: str | None = None,
) -> dict[str, Any]:
    fields: dict[str, Any] = {"settings": {"products": products}}
    if webhook:
        fields["webhook"] = webhook
    completion = connect(new_session(**fields)).link_all()
    exchanged = api.post(
        "/link-session/exchange-token",
        json={"exchangeable_token": completion["exchangeable_token"]},
    )
    assert exchanged.status_code == 201, exchanged.text
    link: dict[str, Any] = exchanged.json()["link"]
    return link


def _settle(client: TestClient) -> int:
    response = client.post("/_sandbox/products/settle")
    assert response.status_code == 200
    settled: int = response.json()["settled"]
    return settled


def test_products_without_prefetch_wait_for_the_first_refresh(
    api: TestClient, new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    link = _link(api, new_session, connect, {"transactions": {}, "identity": {}})
    products = link["products"]
    # Accounts were read in Connect; the rest has never been fetched.
    assert products["accounts"]["refreshed_at"] is not None
    for name in ("transactions", "identity"):
        assert products[name]["refreshed_at"] is None
        assert products[name]["last_attempted_at"] is None
    assert products["transactions"]["has_history"] is False
    link_id = link["link_id"]
    assert api.get(f"/links/{link_id}/transactions").json()["total"] == 0
    synced = api.get(f"/links/{link_id}/transactions/sync").json()
    assert synced["transactions"]["created"] == [] and synced["has_more"] is False
    identity = api.get(f"/links/{link_id}/identity").json()
    assert identity["accounts"] and all(a["owners"] == [] for a in identity["accounts"])
    assert _settle(api) == 0

    refreshed = api.post(f"/links/{link_id}/products", json={"products": ["transactions"]})
    assert refreshed.status_code == 202
    running = refreshed.json()["products"]["transactions"]
    # In progress: attempted, not landed yet.
    assert running["last_attempted_at"] is not None and running["refreshed_at"] is None
    assert running["error_code"] is None

    assert _settle(api) == 1
    landed = api.get(f"/links/{link_id}").json()["products"]
    assert landed["transactions"]["refreshed_at"] is not None
    assert landed["transactions"]["has_history"] is True
    assert landed["identity"]["refreshed_at"] is None  # not asked for
    assert api.get(f"/links/{link_id}/transactions").json()["total"] > 0
    first_sync = api.get(f"/links/{link_id}/transactions/sync").json()
    assert first_sync["transactions"]["created"]


def test_prefetched_products_are_fetched_right_after_the_exchange(
    api: TestClient, new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    link = _link(
        api,
        new_session,
        connect,
        {"transactions": {"prefetch": True}, "identity": {}},
    )
    products = link["products"]
    assert products["transactions"]["last_attempted_at"] is not None
    assert products["transactions"]["refreshed_at"] is None
    assert products["identity"]["last_attempted_at"] is None
    assert _settle(api) == 1
    landed = api.get(f"/links/{link['link_id']}").json()["products"]
    assert landed["transactions"]["refreshed_at"] is not None
    assert landed["identity"]["refreshed_at"] is None


def test_a_failed_refresh_is_on_the_product_until_the_next_one_lands(
    api: TestClient, new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    link = _link(api, new_session, connect, {"transactions": {"prefetch": True}})
    link_id = link["link_id"]
    _settle(api)
    before = api.get(f"/links/{link_id}").json()["products"]["transactions"]["refreshed_at"]
    planned = api.post(
        f"/_sandbox/links/{link_id}/refresh-failure",
        json={"products": ["transactions"], "error_code": "timeout"},
    )
    assert planned.status_code == 200, planned.text
    api.post(f"/links/{link_id}/products", json={"products": ["transactions"]})
    _settle(api)
    failed = api.get(f"/links/{link_id}").json()
    product = failed["products"]["transactions"]
    assert failed["state"] == "connected"  # a product failure does not break the link
    assert product["error_code"] == "timeout"
    assert product["error_message"]
    assert product["refreshed_at"] == before
    assert product["last_attempted_at"] >= before

    # Only the next refresh was planned to fail.
    api.post(f"/links/{link_id}/products", json={"products": ["transactions"]})
    _settle(api)
    healed = api.get(f"/links/{link_id}").json()["products"]["transactions"]
    assert healed["error_code"] is None and healed["error_message"] is None


def test_a_refresh_fails_when_the_link_breaks_before_it_lands(
    api: TestClient, new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    link_id = _link(api, new_session, connect, {"transactions": {}})["link_id"]
    api.post(f"/links/{link_id}/products", json={"products": ["transactions"]})
    api.post(f"/links/{link_id}/reset").raise_for_status()
    _settle(api)
    product = api.get(f"/links/{link_id}").json()["products"]["transactions"]
    assert product["error_code"] == "auth_expired"
    assert product["refreshed_at"] is None


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"products": ["transactions"], "error_code": "exploded"}, "error_code"),
        ({"products": ["investments"], "error_code": "timeout"}, None),
    ],
)
def test_refresh_failure_control_refuses_bad_input(
    api: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    body: dict[str, Any],
    where: str | None,
) -> None:
    link_id = _link(api, new_session, connect, {"transactions": {}})["link_id"]
    response = api.post(f"/_sandbox/links/{link_id}/refresh-failure", json=body)
    if where is None:
        assert response.status_code == 403  # the link does not have that product
    else:
        assert response.status_code == 422
        assert response.json()["validation_errors"][0]["location"][-1] == where


def test_refresh_webhooks_follow_the_lifecycle(
    api: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    receiver: Receiver,
) -> None:
    link = _link(api, new_session, connect, {"transactions": {"prefetch": True}}, receiver.url)
    link_id = link["link_id"]
    _settle(api)
    api.post(
        f"/_sandbox/links/{link_id}/refresh-failure",
        json={"products": ["transactions"], "error_code": "institution_error"},
    ).raise_for_status()
    api.post(f"/links/{link_id}/products", json={"products": ["transactions"]})
    _settle(api)
    # awaiting_token_exchange, connected; prefetch: in_progress, completed, updates_available;
    # the refresh: in_progress, failed.
    bodies = [json.loads(r["body"]) for r in receiver.wait_for(7)]
    products = [b for b in bodies if b["webhook_event"] == "link.product_refresh"]
    assert [(p["product"], p["state"]) for p in products] == [
        ("transactions", "in_progress"),
        ("transactions", "completed"),
        ("transactions", "in_progress"),
        ("transactions", "failed"),
    ]
    assert products[-1]["error_message"]
    for payload in products:
        ProductStateChangedWebhook.from_dict(payload)  # the SDK's model accepts each one
    updates = [b for b in bodies if b["webhook_event"] == "transactions.updates_available"]
    assert len(updates) == 1
    TransactionUpdatesAvailableWebhook.from_dict(updates[0])
    assert bodies.index(updates[0]) > bodies.index(products[1])
