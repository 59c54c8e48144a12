"""Data endpoints: account details, identity, transactions (+ sync), investments, users, import."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.sandbox.conftest import ConnectDriver, FakeClock

# Prefetched: MoneyKit fetches them right after the exchange instead of on the first refresh.
ALL_PRODUCTS: dict[str, dict[str, Any]] = {
    "account_numbers": {"prefetch": True},
    "identity": {"prefetch": True},
    "transactions": {"prefetch": True},
    "investments": {"prefetch": True},
}


@pytest.fixture
def app(make_app: Callable[..., Starlette]) -> Starlette:
    # Refreshes land at once and no limits apply: these tests check data, not timing.
    return make_app(refresh_delay_s=0, rate_limits=False)


@pytest.fixture
def linked(
    api: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
) -> str:
    """A connected Credentials Bank link with every product."""
    token = new_session(
        settings={"products": ALL_PRODUCTS},
        customer_user={"id": "cust_data"},
        custom_sandbox_data={
            "accounts": [
                {
                    "account_type": "depository.checking",
                    "name": "Main",
                    "account_number": "123456789",
                    "routing_number": "011000015",
                },
                {
                    "account_type": "investment.brokerage",
                    "name": "Invest",
                    "account_number": "99887766",
                },
            ],
            "owners": [
                {
                    "names": ["Ada Example"],
                    "addresses": [],
                    "phone_numbers": [],
                    "emails": [{"address": "ada@example.com"}],
                }
            ],
        },
    )
    completion = connect(token).link_all()
    exchanged = api.post(
        "/link-session/exchange-token",
        json={"exchangeable_token": completion["exchangeable_token"]},
    )
    assert exchanged.status_code == 201, exchanged.text
    link_id: str = exchanged.json()["link"]["link_id"]
    return link_id


def test_account_numbers_identity_and_single_account(api: TestClient, linked: str) -> None:
    numbers = api.get(f"/links/{linked}/accounts/numbers")
    assert numbers.status_code == 200, numbers.text
    checking = next(a for a in numbers.json()["accounts"] if a["name"] == "Main")
    assert checking["numbers"]["ach"] == [
        {
            "account_number": "123456789",
            "routing_number": "011000015",
            "wire_routing_number": "011000015",
        }
    ]
    assert set(checking["numbers"]) == {"ach", "eft", "bacs", "international"}

    identity = api.get(f"/links/{linked}/identity").json()
    assert identity["accounts"][0]["owners"][0]["names"] == ["Ada Example"]

    account_id = checking["account_id"]
    one = api.get(f"/links/{linked}/accounts/{account_id}")
    assert one.status_code == 200
    assert one.json()["account"]["account_id"] == account_id


def test_products_not_granted_are_403(api: TestClient) -> None:
    demo = next(
        link["link_id"]
        for link in api.get("/links", params={"limit": 500}).json()["links"]
        if "account_numbers" not in api.get(f"/links/{link['link_id']}").json()["products"]
    )
    response = api.get(f"/links/{demo}/accounts/numbers")
    assert response.status_code == 403
    assert response.json()["error_code"] == "link_error.forbidden_action"
    assert response.headers["x-request-id"] == response.json()["request_id"]


def test_transactions_legacy_paging_is_newest_first(api: TestClient, linked: str) -> None:
    first = api.get(f"/links/{linked}/transactions", params={"size": 10, "page": 1}).json()
    second = api.get(f"/links/{linked}/transactions", params={"size": 10, "page": 2}).json()
    assert first["total"] == second["total"] > 10
    dates = [t["date"] for t in first["transactions"] + second["transactions"]]
    assert dates == sorted(dates, reverse=True)
    ids = [t["transaction_id"] for t in first["transactions"] + second["transactions"]]
    assert len(set(ids)) == 20
    for txn in first["transactions"]:
        assert isinstance(txn["amount"], str) and not txn["amount"].startswith("-")
        assert txn["type"] in ("credit", "debit")


def _sync_all(
    api: TestClient, link_id: str, cursor: str | None, size: int = 25
) -> tuple[list[dict[str, Any]], str]:
    pages = []
    while True:
        params: dict[str, Any] = {"size": size}
        if cursor:
            params["cursor"] = cursor
        body = api.get(f"/links/{link_id}/transactions/sync", params=params).json()
        pages.append(body)
        cursor = body["cursor"]["next"]
        if not body["has_more"]:
            assert cursor
            return pages, cursor


def test_sync_replays_history_then_only_changes(api: TestClient, linked: str) -> None:
    pages, cursor = _sync_all(api, linked, None)
    created = [t for p in pages for t in p["transactions"]["created"]]
    legacy = api.get(f"/links/{linked}/transactions", params={"size": 1000}).json()
    assert {t["transaction_id"] for t in created} == {
        t["transaction_id"] for t in legacy["transactions"]
    }
    # Nothing new until a refresh.
    again, cursor = _sync_all(api, linked, cursor)
    assert again[0]["transactions"] == {"created": [], "updated": [], "removed": []}

    old_pending = {t["transaction_id"] for t in created if t["pending"]}
    assert (
        api.post(f"/links/{linked}/products", json={"products": ["transactions"]}).status_code
        == 202
    )
    after, _ = _sync_all(api, linked, cursor)
    changes = [p["transactions"] for p in after]
    removed = {r for c in changes for r in c["removed"]}
    # Pending transactions are replaced, never reported as removed.
    assert not removed & old_pending
    assert any(c["created"] for c in changes)


def test_same_seed_gives_same_transactions(make_app: Callable[..., Starlette]) -> None:
    bodies = []
    for _ in range(2):
        with TestClient(make_app(rate_limits=False), base_url="http://localhost:8611") as client:
            from tests.sandbox.conftest import issue_token

            client.headers["Authorization"] = f"Bearer {issue_token(client)}"
            link_id = next(
                row["link_id"]
                for row in client.get("/links", params={"limit": 500}).json()["links"]
                if "transactions" in client.get(f"/links/{row['link_id']}").json()["products"]
            )
            bodies.append(
                client.get(f"/links/{link_id}/transactions", params={"size": 1000}).json()
            )
    assert bodies[0]["transactions"] == bodies[1]["transactions"]
    assert bodies[0]["total"] > 0


def test_investments(api: TestClient, linked: str) -> None:
    holdings = api.get(f"/links/{linked}/investments/holdings").json()
    assert holdings["holdings"]
    assert {h["security_id"] for h in holdings["holdings"]} <= {
        s["security_id"] for s in holdings["securities"]
    }
    txns = api.get(f"/links/{linked}/investments/transactions", params={"size": 5}).json()
    assert txns["total"] >= 5 and txns["size"] == 5
    assert all(isinstance(t["amount"], str) for t in txns["investment_transactions"])


def test_users_endpoints_use_customer_user_id(api: TestClient, linked: str) -> None:
    links = api.get("/users/cust_data/links").json()["links"]
    assert list(links) == [linked]
    accounts = api.get("/users/cust_data/accounts").json()["links"]
    assert len(accounts[linked]) == 2
    txns = api.get("/users/cust_data/transactions", params={"size": 5}).json()
    assert txns["size"] == 5 and txns["total"] >= 5
    assert api.get("/users/nobody/links").json() == {"links": {}}


@pytest.mark.parametrize("date_value", ["2024-01-02", '"2024-01-02"', "2024-01-02T10:00:00"])
def test_import_link_accepts_plain_and_quoted_dates(api: TestClient, date_value: str) -> None:
    body = {
        "customer_user": {"id": "cust_import"},
        "institution_id": "mx.moneykit-creds-bank",
        "accounts": [
            {
                "account_id": "their-1",
                "name": "Old Checking",
                "type": "checking",
                "mask": "4321",
                "balances": {"current": 100.5, "currency": "USD"},
            }
        ],
        "transactions": [
            {
                "account_id": "their-1",
                "transaction_id": "t-1",
                "amount": "-12.50",
                "date": date_value,
            },
            {"account_id": "their-1", "amount": "100", "date": "2024-01-03"},
        ],
    }
    response = api.post("/links/import", json=body)
    assert response.status_code == 200, response.text
    link = response.json()
    assert (link["state"], link["error_code"]) == ("error", "auth_expired")
    txns = api.get(
        f"/links/{link['link_id']}/transactions",
        params={"start_date": "2024-01-01", "end_date": "2024-01-31"},
    ).json()["transactions"]
    by_original = {t["original_id"]: t for t in txns}
    assert by_original["t-1"]["amount"] == "12.50"
    assert by_original["t-1"]["type"] == "debit"
    assert by_original["t-1"]["date"] == "2024-01-02"
    assert by_original[None]["type"] == "credit"
    accounts = api.get(f"/links/{link['link_id']}/accounts").json()["accounts"]
    assert accounts[0]["original_id"] == "their-1"
    assert accounts[0]["account_type"] == "depository.checking"

    more = api.post(
        f"/links/{link['link_id']}/import/transactions",
        json={"transactions": [{"account_id": "their-1", "amount": "-1", "date": '"2024-01-05"'}]},
    )
    assert more.status_code == 200, more.text


def test_import_rejects_unknown_account(api: TestClient) -> None:
    response = api.post(
        "/links/import",
        json={
            "customer_user": {"id": "cust_import"},
            "institution_id": "moneykit-creds-bank",
            "accounts": [],
            "transactions": [{"account_id": "nope", "amount": "1", "date": "2024-01-01"}],
        },
    )
    assert response.status_code == 422
    assert response.json()["error_code"] == "api_error.request.validation_failed"


def test_deleted_link_data_is_410(api: TestClient, linked: str) -> None:
    assert api.delete(f"/links/{linked}").status_code == 204
    for path in ("accounts/numbers", "identity", "transactions", "transactions/sync"):
        response = api.get(f"/links/{linked}/{path}")
        assert response.status_code == 410, path
        assert response.json()["error_code"] == "link_error.deleted"


def test_clock_offset_moves_token_expiry(client: TestClient, clock: FakeClock) -> None:
    from tests.sandbox.conftest import issue_token

    token = issue_token(client)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/links", params={"limit": 500}, headers=headers).status_code == 200
    moved = client.post("/_sandbox/time", json={"advance_seconds": 3601}).json()
    assert moved["offset_seconds"] == 3601
    expired = client.get("/links", params={"limit": 500}, headers=headers)
    assert expired.json()["error_code"] == "api_error.auth.expired_access_token"
