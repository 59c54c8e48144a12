"""Bank logins behind Connect: failing credentials, MFA, OAuth consent on the bank origin."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from tests.sandbox.conftest import ConnectDriver

BANK_URL = "http://localhost:8612"


@pytest.fixture
def bank(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app.state.bank_app, base_url=BANK_URL) as bank_client:
        yield bank_client


@pytest.mark.parametrize(
    ("username", "password", "error_id"),
    [
        ("user_bad", "pass_good", "invalid_credentials"),
        ("user_good", "wrong", "invalid_credentials"),
        ("user_locked", "pass_good", "user_setup_required"),
    ],
)
def test_failing_credentials(
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
    username: str,
    password: str,
    error_id: str,
) -> None:
    response = connect(new_session()).login("moneykit-creds-bank", username, password)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["error_id"] == error_id
    assert error["displayed_message"] and error["request_id"]


def test_mfa(
    client: TestClient, new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    driver = connect(new_session())
    step = driver.login("moneykit-creds-bank", "user_mfa", "pass_good")
    assert step.json() == {"mfa": {"institution_id": "moneykit-creds-bank", "kind": "mfa"}}
    mfa = {"params": {"mode": "start"}, "headers": driver.headers}
    wrong = client.post("/connect-api/mfa", json={"code": "000000"}, **mfa)
    assert wrong.status_code == 400
    assert wrong.json()["error"]["error_id"] == "user_input_incorrect"
    right = client.post("/connect-api/mfa", json={"code": "123456"}, **mfa)
    assert right.status_code == 200
    assert right.json()["accounts"]


def _oauth(
    client: TestClient, bank: TestClient, driver: ConnectDriver, decision: str
) -> tuple[str, dict[str, list[str]]]:
    step = driver.login("moneykit-oauth-bank").json()
    url = step["oauth"]["url"]
    assert url.startswith(f"{BANK_URL}/oauth/authorize?state=")
    page = bank.get(url)
    assert page.status_code == 200 and "Allow" in page.text and "Deny" in page.text
    oauth_state = parse_qs(urlsplit(url).query)["state"][0]
    answer = bank.post(
        "/oauth/decision",
        content=f"state={oauth_state}&decision={decision}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    target = answer.headers["location"]
    return target, parse_qs(urlsplit(target).query)


def test_oauth_allow_then_resume(
    client: TestClient,
    bank: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
) -> None:
    token = new_session(redirect_uri="http://localhost:8501/oauth_return")
    driver = connect(token)
    target, query = _oauth(client, bank, driver, "allow")
    assert target.startswith("http://localhost:8501/oauth_return?")
    assert query["code"] and query["state"]
    # The return page may run in a window without an opener: /continue resumes server-side.
    resumed = client.post(
        "/connect-api/oauth/finish",
        params={"mode": "continue"},
        json={"redirect_url": target},
        headers=driver.headers,
    )
    assert resumed.status_code == 200, resumed.text
    ids = [a["account_id"] for a in resumed.json()["accounts"]]
    done = connect(token, "continue").complete(ids)
    assert done.status_code == 200
    assert done.json()["completion"]["institution"]["id"] == "moneykit-oauth-bank"
    status = client.get(
        "/connect-api/oauth/status", params={"mode": "start"}, headers=driver.headers
    ).json()
    assert (status["answered"], status["completed"]) == (True, True)
    assert status["completion"]["link_id"] == done.json()["completion"]["link_id"]


def test_oauth_deny(
    client: TestClient,
    bank: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
) -> None:
    driver = connect(new_session())
    target, query = _oauth(client, bank, driver, "deny")
    assert query["error"] == ["access_denied"]
    denied = client.post(
        "/connect-api/oauth/finish",
        params={"mode": "start"},
        json={"redirect_url": target},
        headers=driver.headers,
    )
    assert denied.status_code == 400
    assert denied.json()["error"]["error_id"] == "user_oauth_denied"


def test_oauth_state_must_match(
    client: TestClient,
    bank: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
) -> None:
    driver = connect(new_session())
    driver.login("moneykit-oauth-bank")
    forged = client.post(
        "/connect-api/oauth/finish",
        params={"mode": "start"},
        json={"redirect_url": "http://localhost:8501/oauth_return?state=forged&code=x"},
        headers=driver.headers,
    )
    assert forged.status_code == 400
    assert bank.get("/oauth/authorize", params={"state": "forged"}).status_code == 400


def test_cut_opener_sends_coop(
    client: TestClient,
    bank: TestClient,
    new_session: Callable[..., str],
    connect: Callable[..., ConnectDriver],
) -> None:
    client.post("/_sandbox/oauth", json={"cut_opener": True}).raise_for_status()
    url = connect(new_session()).login("moneykit-oauth-bank").json()["oauth"]["url"]
    assert bank.get(url).headers["cross-origin-opener-policy"] == "same-origin"


def test_session_preselects_institution(
    new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    info = connect(new_session(institution_id="moneykit-oauth-bank")).session().json()
    assert info["preselected_institution_id"] == "moneykit-oauth-bank"
