"""The Connect page's extra steps, through the same /connect-api calls its script makes:
a one-time code sent to a chosen device (OTP) and the Permissions screen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.testclient import TestClient

from tests.sandbox.conftest import ConnectDriver


def _post(driver: ConnectDriver, path: str, body: dict[str, Any]) -> Any:
    return driver.client.post(
        f"/connect-api/{path}", params={"mode": driver.mode}, json=body, headers=driver.headers
    )


def test_otp_asks_for_a_device_then_its_code(
    new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    driver = connect(new_session())
    login = driver.login("moneykit-creds-bank", "user_otp", "pass_good")
    assert login.status_code == 200, login.text
    challenge = login.json()["mfa"]
    assert challenge["kind"] == "otp_device"
    devices = [d["device_id"] for d in challenge["devices"]]
    assert devices == ["sms", "email"]

    # The code is asked for only once a device was chosen.
    early = _post(driver, "mfa", {"code": "123456"})
    assert early.status_code == 400
    assert _post(driver, "otp/device", {"device_id": "pigeon"}).status_code == 400

    sent = _post(driver, "otp/device", {"device_id": "email"})
    assert sent.status_code == 200 and sent.json()["mfa"]["kind"] == "otp"
    wrong = _post(driver, "mfa", {"code": "000000"})
    assert wrong.json()["error"]["error_id"] == "user_input_incorrect"
    right = _post(driver, "mfa", {"code": "123456"})
    assert right.status_code == 200 and right.json()["accounts"]


def test_mfa_is_a_code_without_a_device_step(
    new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    driver = connect(new_session())
    login = driver.login("moneykit-creds-bank", "user_mfa", "pass_good")
    assert login.json()["mfa"]["kind"] == "mfa"
    assert _post(driver, "otp/device", {"device_id": "sms"}).status_code == 400


def test_permissions_list_the_requested_products(
    new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    token = new_session(
        settings={
            "products": {
                "transactions": {"required": True},
                "identity": {"reason": "check who owns the account"},
                "account_numbers": {"require_permission": True},
            }
        }
    )
    rows = connect(token).session().json()["permissions"]
    # In the order of MoneyKit's ProductsSettings; required and require_permission are fixed.
    assert rows == [
        {"product": "account_numbers", "required": True, "reason": None},
        {"product": "identity", "required": False, "reason": "check who owns the account"},
        {"product": "transactions", "required": True, "reason": None},
    ]
    assert connect(new_session()).session().json()["permissions"] == []


def test_a_declined_product_is_not_on_the_link(
    api: TestClient, new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    token = new_session(settings={"products": {"transactions": {"required": True}, "identity": {}}})
    driver = connect(token)
    login = driver.login("moneykit-creds-bank", "user_good", "pass_good")
    ids = [a["account_id"] for a in login.json()["accounts"]]
    refused = _post(driver, "permissions", {"products": ["identity"]})
    assert refused.status_code == 400  # transactions is required
    assert "transactions" in refused.json()["error"]["displayed_message"]
    granted = _post(driver, "permissions", {"products": ["transactions"]})
    assert granted.status_code == 200 and granted.json()["granted"] == ["transactions"]
    completion = driver.complete(ids).json()["completion"]
    link = api.post(
        "/link-session/exchange-token",
        json={"exchangeable_token": completion["exchangeable_token"]},
    ).json()["link"]
    assert set(link["products"]) == {"accounts", "transactions"}
    denied = api.get(f"/links/{link['link_id']}/identity")
    assert denied.status_code == 403
    assert denied.json()["error_code"] == "link_error.forbidden_action"


def test_without_an_answer_every_requested_product_is_granted(
    api: TestClient, new_session: Callable[..., str], connect: Callable[..., ConnectDriver]
) -> None:
    token = new_session(settings={"products": {"identity": {}}})
    completion = connect(token).link_all()
    link = api.post(
        "/link-session/exchange-token",
        json={"exchangeable_token": completion["exchangeable_token"]},
    ).json()["link"]
    assert set(link["products"]) == {"accounts", "identity"}
