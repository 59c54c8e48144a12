"""Link sessions, the Connect page's backend, token exchange and relink."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from moneykit.models import ExchangeTokenResponse
from starlette.applications import Starlette
from starlette.testclient import TestClient

ErrorCheck = Callable[[httpx.Response, int, str], dict[str, Any]]
CONNECT_INSTITUTION_KEYS = {
    "id",
    "name",
    "country",
    "domain",
    "color",
    "color_dark",
    "logo",
    "logo_dark",
    "avatar",
    "avatar_dark",
    "search_group",
    "is_featured",
    "providers",
}


def _connect_error(response: httpx.Response, status: int, error_id: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["error_id"] == error_id
    assert error["displayed_message"]
    assert error["request_id"].startswith("req_")
    return error


# ------------------------------------------------------------------------- link sessions
@pytest.mark.parametrize(
    ("body", "location"),
    [
        (
            {"customer_user": {"id": "abc"}, "redirect_uri": "http://x/"},
            ["body", "customer_user", "id"],
        ),
        ({"customer_user": {"id": "cust_1"}}, ["body", "redirect_uri"]),
        ({"redirect_uri": "http://x/"}, ["body", "customer_user"]),
        ({"customer_user": {"id": "cust_1"}, "redirect_uri": ""}, ["body", "redirect_uri"]),
    ],
)
def test_link_session_validation(
    api: TestClient, moneykit_error: ErrorCheck, body: dict[str, Any], location: list[str]
) -> None:
    error = moneykit_error(
        api.post("/link-session", json=body), 422, "api_error.request.validation_failed"
    )
    assert [e["location"] for e in error["validation_errors"]] == [location]


def test_link_session_unknown_targets(api: TestClient, moneykit_error: ErrorCheck) -> None:
    base = {"customer_user": {"id": "cust_1"}, "redirect_uri": "http://localhost:8501/oauth_return"}
    moneykit_error(
        api.post("/link-session", json={**base, "existing_link_id": "mk_nope"}),
        404,
        "link_error.not_found",
    )
    moneykit_error(
        api.post("/link-session", json={**base, "institution_id": "nope"}),
        404,
        "institution_error.not_found",
    )


def test_link_session_needs_auth(client: TestClient, moneykit_error: ErrorCheck) -> None:
    response = client.post(
        "/link-session",
        json={
            "customer_user": {"id": "cust_1"},
            "redirect_uri": "http://localhost:8501/oauth_return",
        },
    )
    moneykit_error(response, 401, "api_error.auth.unauthorized")


# ---------------------------------------------------------------------------- new links
def test_credentials_bank_flow_and_single_exchange(
    api: TestClient,
    app: Starlette,
    new_session: Callable[..., str],
    connect: Callable[..., Any],
    moneykit_error: ErrorCheck,
) -> None:
    token = new_session(
        link_tags=["customer:cust_9001", "app:web"], webhook="http://localhost:8501/hooks"
    )
    page = connect(token)
    info = page.session().json()
    assert info["mode"] == "link"
    names = {inst["name"] for inst in info["institutions"]}
    assert {"Credentials Bank", "Instant Bank", "OAuth Bank"} <= names

    _connect_error(
        page.login("moneykit-creds-bank", "user_good", "wrong"), 400, "invalid_credentials"
    )
    _connect_error(page.login("moneykit-creds-bank"), 400, "invalid_credentials")

    login = page.login("moneykit-creds-bank", "user_good", "pass_good")
    assert login.status_code == 200
    offered = login.json()["accounts"]
    assert len(offered) >= 2
    keep = [offered[0]["account_id"]]
    done = page.complete(keep)
    assert done.status_code == 200
    completion = done.json()["completion"]
    assert set(completion["institution"]) == CONNECT_INSTITUTION_KEYS
    assert [a["account_id"] for a in completion["selected_accounts"]] == keep
    assert page.complete(keep).json()["completion"] == completion, "complete is idempotent"

    link = api.get(f"/links/{completion['link_id']}").json()
    assert link["state"] == "awaiting_token_exchange"
    assert link["link_tags"] == ["customer:cust_9001", "app:web"]
    assert link["webhook"] == "http://localhost:8501/hooks"
    assert app.state.sandbox.links[completion["link_id"]].customer_id == "cust_9001"

    exchanged = api.post(
        "/link-session/exchange-token",
        json={"exchangeable_token": completion["exchangeable_token"]},
    )
    assert exchanged.status_code == 201
    parsed = ExchangeTokenResponse.from_dict(exchanged.json())
    assert parsed is not None
    assert parsed.link_id == parsed.link.link_id == completion["link_id"]
    assert parsed.link.state.value == "connected"
    accounts = api.get(f"/links/{completion['link_id']}/accounts").json()["accounts"]
    assert [a["account_id"] for a in accounts] == keep

    again = api.post(
        "/link-session/exchange-token",
        json={"exchangeable_token": completion["exchangeable_token"]},
    )
    moneykit_error(again, 400, "link_session_error.invalid_token_exchange")
    moneykit_error(
        api.post("/link-session/exchange-token", json={"exchangeable_token": "ext_unknown"}),
        400,
        "link_session_error.invalid_token_exchange",
    )
    _connect_error(page.session(), 400, "link_session_completed")


def test_instant_bank_needs_no_credentials(
    new_session: Callable[..., str], connect: Callable[..., Any]
) -> None:
    page = connect(new_session())
    login = page.login("moneykit-instant-bank")
    assert login.status_code == 200
    assert login.json()["accounts"]
    instant = next(i for i in page.session().json()["institutions"] if i["name"] == "Instant Bank")
    assert instant["login"] == "instant"


def test_session_settings_narrow_institutions_and_products(
    api: TestClient, new_session: Callable[..., str], connect: Callable[..., Any]
) -> None:
    token = new_session(
        settings={"products": {"investments": {"required": True}}, "countries": ["US"]}
    )
    page = connect(token)
    offered = page.session().json()["institutions"]
    assert offered and all(i["country"] == "US" for i in offered)
    assert "moneykit-creds-bank" in {i["id"] for i in offered}
    assert "copperfield-savings" not in {i["id"] for i in offered}, "no investments there"
    _connect_error(
        page.login("copperfield-savings", "user_good", "pass_good"),
        400,
        "institution_not_available",
    )
    completion = page.link_all()
    link = api.get(f"/links/{completion['link_id']}").json()
    assert set(link["products"]) == {"accounts", "investments"}


def test_custom_sandbox_accounts(
    new_session: Callable[..., str], connect: Callable[..., Any]
) -> None:
    token = new_session(
        custom_sandbox_data={
            "accounts": [
                {"account_type": "depository.checking", "name": "Ops", "account_number": "99881234"}
            ]
        }
    )
    login = connect(token).login("moneykit-creds-bank", "user_good", "pass_good").json()
    assert [(a["name"], a["account_mask"]) for a in login["accounts"]] == [("Ops", "1234")]


def test_session_tokens_are_checked(
    new_session: Callable[..., str], connect: Callable[..., Any], clock: Any
) -> None:
    _connect_error(connect("lst_unknown").session(), 401, "invalid_link_session")
    _connect_error(connect("").session(), 401, "invalid_link_session")
    token = new_session()
    _connect_error(connect(token, "relink").session(), 400, "invalid_link_session")
    clock.advance(minutes=31)
    _connect_error(connect(token).session(), 401, "link_session_expired")


def test_continue_hands_back_a_finished_link(
    new_session: Callable[..., str], connect: Callable[..., Any]
) -> None:
    token = new_session()
    completion = connect(token).link_all()
    resumed = connect(token, "continue").session().json()
    assert resumed["completion"] == completion


def test_preselected_institution(
    new_session: Callable[..., str], connect: Callable[..., Any]
) -> None:
    info = connect(new_session(institution_id="moneykit-instant-bank")).session().json()
    assert info["preselected_institution_id"] == "moneykit-instant-bank"


# ------------------------------------------------------------------------------- relink
def test_relink_keeps_link_id_and_replaces_tags(
    api: TestClient, new_session: Callable[..., str], connect: Callable[..., Any]
) -> None:
    first = connect(new_session(link_tags=["customer:cust_9001"], webhook="http://h/1")).link_all()
    link_id = first["link_id"]
    api.post(
        "/link-session/exchange-token", json={"exchangeable_token": first["exchangeable_token"]}
    )
    assert api.post(f"/links/{link_id}/reset").json()["error_code"] == "auth_expired"

    token = new_session(
        existing_link_id=link_id, link_tags=["customer:cust_9001", "relinked"], webhook="http://h/2"
    )
    _connect_error(connect(token, "start").session(), 400, "invalid_link_session")
    page = connect(token, "relink")
    info = page.session().json()
    assert info["mode"] == "relink"
    assert info["relink"]["link_id"] == link_id
    assert [i["id"] for i in info["institutions"]] == ["moneykit-creds-bank"]
    _connect_error(page.login("moneykit-instant-bank"), 400, "institution_mismatch")
    _connect_error(
        page.login("moneykit-creds-bank", "user_good", "bad"), 400, "invalid_credentials"
    )
    result = page.login("moneykit-creds-bank", "user_good", "pass_good").json()["completion"]
    assert result["kind"] == "relink"
    assert result["link_id"] == link_id
    assert result["exchangeable_token"] is None

    link = api.get(f"/links/{link_id}").json()
    assert (link["state"], link["error_code"]) == ("connected", None)
    assert link["link_tags"] == ["customer:cust_9001", "relinked"]
    assert link["webhook"] == "http://h/2"

    # Protocol §3.4: leaving webhook and tags out of the relink session removes them.
    api.post(f"/links/{link_id}/reset")
    bare = connect(new_session(existing_link_id=link_id), "relink")
    bare.login("moneykit-creds-bank", "user_good", "pass_good")
    link = api.get(f"/links/{link_id}").json()
    assert (link["link_tags"], link["webhook"]) == (None, None)


def test_relink_of_deleted_link(
    api: TestClient, new_session: Callable[..., str], connect: Callable[..., Any]
) -> None:
    completion = connect(new_session()).link_all()
    token = new_session(existing_link_id=completion["link_id"])
    api.delete(f"/links/{completion['link_id']}")
    _connect_error(connect(token, "relink").session(), 410, "link_deleted")
