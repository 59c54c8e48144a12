"""The official `moneykit` 0.2.3 SDK, unchanged, against the sandbox over real HTTP.

If any response had a wrong status code, a missing required key or a loosely typed value, the SDK's
strict pydantic models (or its exact-status lookup) would fail these tests. There is one test per
REST endpoint (see the coverage table in sandbox/README.md), plus the error cases.

The suite targets ``contract_target`` (see conftest): the sandbox by default, or the real
MoneyKit with ``MONEYKIT_CONTRACT_BASE_URL`` + credentials. Links there are made with
``POST /links/import`` (works on MoneyKit's sandbox keys); tests that need a link made through
Connect, or the sandbox's ``/_sandbox`` controls, ask for ``sandbox_only`` and skip themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import moneykit
import pytest
from moneykit.api import (
    AccessTokenApi,
    AccountNumbersApi,
    AccountsApi,
    IdentityApi,
    InstitutionsApi,
    InvestmentsApi,
    LinksApi,
    LinkSessionApi,
    ProductsApi,
    TransactionsApi,
    UsersApi,
    WebhooksApi,
)
from moneykit.exceptions import (
    ApiException,
    BadRequestException,
    NotFoundException,
    UnauthorizedException,
)
from moneykit.models import (
    AccountBalances,
    AccountImportData,
    Body,
    BudCategory,
    BudPrimaryCategory,
    BudSubcategory,
    CreateLinkSessionRequest,
    CustomSandboxAccount,
    CustomSandboxData,
    CustomerUser,
    CustomerUserEmail,
    ExchangeTokenRequest,
    ImportLinkRequest,
    ImportTransactionsRequest,
    LinkSessionSettingOverrides,
    Product,
    ProductSettings,
    ProductsSettings,
    RefreshProductsRequest,
    TransactionImportData,
    TransactionsProductSettings,
    UpdateLinkRequest,
    WebhookLinkTestEvent,
    WebhookTestLinkRequest,
)

from tests.contract.conftest import ContractTarget

pytestmark = pytest.mark.contract


def _error_body(exc: ApiException) -> dict[str, Any]:
    assert exc.body is not None
    body: dict[str, Any] = json.loads(exc.body)
    return body


@pytest.fixture
def sdk(contract_target: ContractTarget) -> Iterator[moneykit.ApiClient]:
    """An SDK client holding a fresh access token."""
    config = moneykit.Configuration(host=contract_target.base_url)
    with moneykit.ApiClient(config) as client:
        token = AccessTokenApi(client).create_access_token(
            grant_type="client_credentials",
            client_id=contract_target.client_id,
            client_secret=contract_target.client_secret,
        )
        config.access_token = token.access_token
        yield client


def _new_session(sdk: moneykit.ApiClient, **fields: Any) -> str:
    request = CreateLinkSessionRequest(
        customer_user=CustomerUser(
            id="cust_contract", email=CustomerUserEmail(address="ops@example.com")
        ),
        redirect_uri="http://localhost:8501/oauth_return",
        **fields,
    )
    return LinkSessionApi(sdk).create_link_session(request).link_session_token


def _link_through_connect(sandbox_url: str, session_token: str) -> dict[str, Any]:
    """Finish a Credentials Bank link the way the hosted Connect page does."""
    headers = {"Authorization": f"Bearer {session_token}"}
    with httpx.Client(base_url=sandbox_url, headers=headers, timeout=10.0) as page:
        login = page.post(
            "/connect-api/institution",
            json={
                "institution_id": "moneykit-creds-bank",
                "username": "user_good",
                "password": "pass_good",
            },
        )
        login.raise_for_status()
        ids = [a["account_id"] for a in login.json()["accounts"]]
        done = page.post("/connect-api/complete", json={"account_ids": ids})
        done.raise_for_status()
        completion: dict[str, Any] = done.json()["completion"]
        return completion


@pytest.fixture
def own_link(sdk: moneykit.ApiClient, sandbox_only: str) -> str:
    """A connected link made by this test (so destructive calls spare the demo links)."""
    completion = _link_through_connect(
        sandbox_only,
        _new_session(
            sdk,
            link_tags=["customer:cust_contract", "app:contract"],
            settings=LinkSessionSettingOverrides(
                products=ProductsSettings(
                    account_numbers=ProductSettings(),
                    identity=ProductSettings(),
                    investments=ProductSettings(),
                    transactions=TransactionsProductSettings(),
                )
            ),
            custom_sandbox_data=CustomSandboxData(
                accounts=[
                    CustomSandboxAccount(
                        account_type="depository.checking",
                        name="Contract Checking",
                        account_number="000123456789",
                        routing_number="011000015",
                    ),
                    CustomSandboxAccount(
                        account_type="investment.brokerage",
                        name="Contract Brokerage",
                        account_number="55554444",
                    ),
                ]
            ),
        ),
    )
    exchanged = LinkSessionApi(sdk).exchange_token(
        ExchangeTokenRequest(exchangeable_token=completion["exchangeable_token"])
    )
    return exchanged.link.link_id


# ------------------------------------------------------------------------------------ auth
def test_access_token(sandbox_url: str, sandbox_credentials: tuple[str, str]) -> None:
    with moneykit.ApiClient(moneykit.Configuration(host=sandbox_url)) as client:
        client_id, client_secret = sandbox_credentials
        token = AccessTokenApi(client).create_access_token(
            grant_type="client_credentials", client_id=client_id, client_secret=client_secret
        )
    assert token.token_type == "bearer"
    assert token.expires_in == 3600
    assert token.access_token


def test_access_token_with_http_basic(
    sandbox_url: str, sandbox_credentials: tuple[str, str]
) -> None:
    client_id, client_secret = sandbox_credentials
    config = moneykit.Configuration(host=sandbox_url, username=client_id, password=client_secret)
    with moneykit.ApiClient(config) as client:
        token = AccessTokenApi(client).create_access_token(grant_type="client_credentials")
    assert token.access_token


def test_bad_client_secret_is_401(sandbox_url: str, sandbox_credentials: tuple[str, str]) -> None:
    config = moneykit.Configuration(host=sandbox_url)
    with moneykit.ApiClient(config) as client, pytest.raises(UnauthorizedException) as caught:
        AccessTokenApi(client).create_access_token(
            grant_type="client_credentials",
            client_id=sandbox_credentials[0],
            client_secret="not-the-secret",
        )
    assert caught.value.status == 401
    assert _error_body(caught.value)["error_code"] == "api_error.auth.unauthorized"


def test_bad_bearer_token_is_401(sandbox_url: str) -> None:
    config = moneykit.Configuration(host=sandbox_url, access_token="expired-or-made-up")
    with moneykit.ApiClient(config) as client, pytest.raises(UnauthorizedException) as caught:
        LinksApi(client).get_links(limit=500)
    assert _error_body(caught.value)["error_code"] == "api_error.auth.unauthorized"


def test_introspect_and_jwks(sdk: moneykit.ApiClient, sandbox_credentials: tuple[str, str]) -> None:
    api = AccessTokenApi(sdk)
    assert api.instrospect_client().client_id == sandbox_credentials[0]
    keys = [key for key in api.get_well_known_jwks().keys if isinstance(key, dict)]
    assert keys and all(key["kty"] == "EC" and key["kid"] for key in keys)


# ---------------------------------------------------------------------------- link session
def test_create_link_session(sdk: moneykit.ApiClient) -> None:
    token = _new_session(
        sdk,
        link_tags=["customer:cust_contract"],
        webhook="http://localhost:8501/webhooks/moneykit",
        settings=LinkSessionSettingOverrides(
            products=ProductsSettings(
                transactions=TransactionsProductSettings(required=True, prefetch=True),
                identity=ProductSettings(reason="verify who you are"),
            )
        ),
    )
    assert isinstance(token, str) and token


def test_exchange_token_works_once(sdk: moneykit.ApiClient, sandbox_url: str) -> None:
    completion = _link_through_connect(sandbox_url, _new_session(sdk, link_tags=["customer:c1"]))
    api = LinkSessionApi(sdk)
    request = ExchangeTokenRequest(exchangeable_token=completion["exchangeable_token"])
    exchanged = api.exchange_token(request)
    assert exchanged.link.link_id == completion["link_id"]
    assert exchanged.link.state.value == "connected"
    assert exchanged.link.link_tags == ["customer:c1"]
    with pytest.raises(BadRequestException) as caught:
        api.exchange_token(request)
    assert _error_body(caught.value)["error_code"] == "link_session_error.invalid_token_exchange"


# ---------------------------------------------------------------------------- institutions
def test_institutions_paged(sdk: moneykit.ApiClient) -> None:
    api = InstitutionsApi(sdk)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = api.get_institutions(limit=5, cursor=cursor)
        seen.extend(inst.institution_id for inst in page.institutions)
        pages += 1
        cursor = page.cursors.next
        if not cursor:
            break
    assert len(seen) == len(set(seen)) >= 15
    assert pages >= 3
    assert {"moneykit-creds-bank", "moneykit-instant-bank", "moneykit-oauth-bank"} <= set(seen)

    featured = api.get_institutions(featured=True, limit=100).institutions
    assert featured and all(inst.is_featured for inst in featured)
    creds = api.get_institutions(name="Credentials", limit=10).institutions
    assert [inst.name for inst in creds] == ["Credentials Bank"]
    assert creds[0].additional_properties["logo_dark"].endswith("/logo_dark.svg")


def test_get_institution(sdk: moneykit.ApiClient, sandbox_url: str) -> None:
    api = InstitutionsApi(sdk)
    inst = api.get_institution("moneykit-instant-bank")
    assert inst.name == "Instant Bank"
    assert inst.country.value == "US"
    avatar = httpx.get(inst.additional_properties["avatar"])
    assert avatar.status_code == 200
    assert avatar.headers["content-type"] == "image/svg+xml"
    assert inst.additional_properties["avatar"].startswith(sandbox_url)
    with pytest.raises(NotFoundException) as caught:
        api.get_institution("no-such-bank")
    assert _error_body(caught.value)["error_code"] == "institution_error.not_found"


# ----------------------------------------------------------------------------------- links
def test_list_and_read_links(sdk: moneykit.ApiClient) -> None:
    links_api = LinksApi(sdk)
    ids: list[str] = []
    cursor = None
    while True:
        page = links_api.get_links(limit=500, cursor=cursor)
        assert page.links is not None
        ids.extend(link.link_id for link in page.links)
        cursor = page.next_cursor
        if not cursor:
            break
    assert len(ids) == len(set(ids)) >= 300

    link = links_api.get_link(ids[0])
    assert link.link_id == ids[0]
    assert link.institution_avatar.startswith("http://localhost:")
    accounts = AccountsApi(sdk).get_accounts(ids[0])
    assert accounts.link.link_id == ids[0]
    assert 1 <= len(accounts.accounts) <= 4
    for account in accounts.accounts:
        assert account.balances.current is not None
        assert account.account_mask and len(account.account_mask) == 4


def test_unknown_link_is_404(sdk: moneykit.ApiClient) -> None:
    with pytest.raises(NotFoundException) as caught:
        LinksApi(sdk).get_link("mk_does_not_exist")
    assert caught.value.status == 404
    body = _error_body(caught.value)
    assert body["error_code"] == "link_error.not_found"
    assert body["error_message"]


def test_reset_link(sdk: moneykit.ApiClient, own_link: str) -> None:
    link = LinksApi(sdk).reset_link(own_link)
    assert link.link_id == own_link
    assert link.state.value == "error"
    assert link.error_code is not None and link.error_code.value == "auth_expired"
    with pytest.raises(ApiException) as caught:
        ProductsApi(sdk).refresh_products(
            own_link, RefreshProductsRequest(products=[Product.TRANSACTIONS])
        )
    assert caught.value.status == 422
    assert _error_body(caught.value)["link_error_code"] == "auth_expired"


def test_update_refresh_and_delete(sdk: moneykit.ApiClient, own_link: str) -> None:
    links_api = LinksApi(sdk)
    updated = links_api.update_link(
        own_link, UpdateLinkRequest(link_tags=["customer:cust_contract", "vip"])
    )
    assert updated.link_tags == ["customer:cust_contract", "vip"]
    refreshed = ProductsApi(sdk).refresh_products(
        own_link, RefreshProductsRequest(products=[Product.ACCOUNTS])
    )
    assert refreshed.products.accounts is not None
    assert refreshed.products.accounts.refreshed_at is not None

    assert links_api.delete_link(own_link) is None
    assert links_api.get_link(own_link).state.value == "deleted"
    with pytest.raises(ApiException) as caught:
        AccountsApi(sdk).get_accounts(own_link)
    assert caught.value.status == 410
    assert _error_body(caught.value)["error_code"] == "link_error.deleted"
    listed: list[str] = []
    cursor = None
    while True:
        page = links_api.get_links(limit=5000, cursor=cursor)
        listed.extend(link.link_id for link in page.links or [])
        cursor = page.next_cursor
        if not cursor:
            break
    assert own_link not in listed
