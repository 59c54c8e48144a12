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
import time
from collections.abc import Iterator
from datetime import date
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
    ForbiddenException,
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
    CustomerUser,
    CustomerUserEmail,
    CustomSandboxAccount,
    CustomSandboxData,
    ExchangeTokenRequest,
    ImportLinkRequest,
    ImportTransactionsRequest,
    LinkErrorNotFoundResponse,
    LinkProductError,
    LinkSessionSettingOverrides,
    ModelDate,
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
                # Prefetched: fetched right after the exchange, not on the first refresh.
                products=ProductsSettings(
                    account_numbers=ProductSettings(prefetch=True),
                    identity=ProductSettings(prefetch=True),
                    investments=ProductSettings(prefetch=True),
                    transactions=TransactionsProductSettings(prefetch=True),
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
    # The prefetch lands a moment later; land it now instead of waiting.
    httpx.post(f"{sandbox_only}/_sandbox/products/settle").raise_for_status()
    return exchanged.link.link_id


# ------------------------------------------------------------------------------------ auth
def test_access_token(contract_target: ContractTarget) -> None:
    with moneykit.ApiClient(moneykit.Configuration(host=contract_target.base_url)) as client:
        token = AccessTokenApi(client).create_access_token(
            grant_type="client_credentials",
            client_id=contract_target.client_id,
            client_secret=contract_target.client_secret,
        )
    assert token.token_type == "bearer"
    assert token.expires_in > 0
    assert token.access_token


def test_access_token_with_http_basic(contract_target: ContractTarget) -> None:
    config = moneykit.Configuration(
        host=contract_target.base_url,
        username=contract_target.client_id,
        password=contract_target.client_secret,
    )
    with moneykit.ApiClient(config) as client:
        token = AccessTokenApi(client).create_access_token(grant_type="client_credentials")
    assert token.access_token


def test_bad_client_secret_is_401(contract_target: ContractTarget) -> None:
    config = moneykit.Configuration(host=contract_target.base_url)
    with moneykit.ApiClient(config) as client, pytest.raises(UnauthorizedException) as caught:
        AccessTokenApi(client).create_access_token(
            grant_type="client_credentials",
            client_id=contract_target.client_id,
            client_secret="not-the-secret",
        )
    assert caught.value.status == 401
    assert _error_body(caught.value)["error_code"] == "api_error.auth.unauthorized"


def test_bad_bearer_token_is_401(contract_target: ContractTarget) -> None:
    config = moneykit.Configuration(host=contract_target.base_url, access_token="made-up")
    with moneykit.ApiClient(config) as client, pytest.raises(UnauthorizedException) as caught:
        LinksApi(client).get_links(limit=500)
    assert _error_body(caught.value)["error_code"] == "api_error.auth.unauthorized"


def test_introspect(sdk: moneykit.ApiClient, contract_target: ContractTarget) -> None:
    client = AccessTokenApi(sdk).instrospect_client()
    assert client.client_id == contract_target.client_id
    assert client.app.app_id


def test_jwks(sdk: moneykit.ApiClient) -> None:
    keys = [key for key in AccessTokenApi(sdk).get_well_known_jwks().keys if isinstance(key, dict)]
    assert keys and all(key["kty"] == "EC" and key["kid"] for key in keys)
    assert any(key.get("use") == "sig" for key in keys)


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


def test_create_link_session_for_unknown_link_is_404(sdk: moneykit.ApiClient) -> None:
    with pytest.raises(NotFoundException) as caught:
        _new_session(sdk, existing_link_id="mk_does_not_exist")
    assert _error_body(caught.value)["error_code"] == "link_error.not_found"


def test_exchange_token_works_once(sdk: moneykit.ApiClient, sandbox_only: str) -> None:
    completion = _link_through_connect(sandbox_only, _new_session(sdk, link_tags=["customer:c1"]))
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
def test_institutions_paged(sdk: moneykit.ApiClient, contract_target: ContractTarget) -> None:
    api = InstitutionsApi(sdk)
    seen: list[str] = []
    cursor = None
    pages = 0
    while pages < 10:
        page = api.get_institutions(limit=5, cursor=cursor)
        seen.extend(inst.institution_id for inst in page.institutions)
        pages += 1
        cursor = page.cursors.next
        if not cursor:
            break
    assert len(seen) == len(set(seen)) >= 15
    assert pages >= 3
    featured = api.get_institutions(featured=True, limit=100).institutions
    assert featured and all(inst.is_featured for inst in featured)
    if contract_target.is_sandbox:
        assert {"moneykit-creds-bank", "moneykit-instant-bank", "moneykit-oauth-bank"} <= set(seen)
        creds = api.get_institutions(name="Credentials", limit=10).institutions
        assert [inst.name for inst in creds] == ["Credentials Bank"]
        assert creds[0].additional_properties["logo_dark"].endswith("/logo_dark.svg")


def test_get_institution(sdk: moneykit.ApiClient, sandbox_only: str) -> None:
    api = InstitutionsApi(sdk)
    inst = api.get_institution("moneykit-instant-bank")
    assert inst.name == "Instant Bank"
    assert inst.country.value == "US"
    avatar = httpx.get(inst.additional_properties["avatar"])
    assert avatar.status_code == 200
    assert avatar.headers["content-type"] == "image/svg+xml"
    assert inst.additional_properties["avatar"].startswith(sandbox_only)


def test_unknown_institution_is_404(sdk: moneykit.ApiClient) -> None:
    with pytest.raises(NotFoundException) as caught:
        InstitutionsApi(sdk).get_institution("no-such-bank")
    assert _error_body(caught.value)["error_code"] == "institution_error.not_found"


# ----------------------------------------------------------------------------------- links
def _all_link_ids(sdk: moneykit.ApiClient) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = LinksApi(sdk).get_links(limit=5000, cursor=cursor)
        ids.extend(link.link_id for link in page.links or [])
        cursor = page.next_cursor
        if not cursor:
            return ids


def test_get_links(sdk: moneykit.ApiClient, contract_target: ContractTarget) -> None:
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
    assert len(ids) == len(set(ids))
    if contract_target.is_sandbox:
        assert len(ids) >= 300


def test_get_link(sdk: moneykit.ApiClient, imported_link: str) -> None:
    link = LinksApi(sdk).get_link(imported_link)
    assert link.link_id == imported_link
    assert link.institution_avatar
    assert link.products.transactions is not None


def test_unknown_link_is_404(sdk: moneykit.ApiClient) -> None:
    with pytest.raises(NotFoundException) as caught:
        LinksApi(sdk).get_link("mk_does_not_exist")
    assert caught.value.status == 404
    body = _error_body(caught.value)
    assert body["error_code"] == "link_error.not_found"
    assert body["error_message"]


def test_update_link(sdk: moneykit.ApiClient, imported_link: str) -> None:
    links_api = LinksApi(sdk)
    updated = links_api.update_link(
        imported_link,
        UpdateLinkRequest(
            link_tags=["customer:cust_contract", "vip"], webhook="https://example.com/h"
        ),
    )
    assert updated.link_tags == ["customer:cust_contract", "vip"]
    assert updated.webhook == "https://example.com/h"
    clear = UpdateLinkRequest()
    clear.additional_properties["webhook"] = None
    assert links_api.update_link(imported_link, clear).webhook is None


def test_delete_link(sdk: moneykit.ApiClient, imported_link: str) -> None:
    links_api = LinksApi(sdk)
    assert links_api.delete_link(imported_link) is None
    with pytest.raises(ApiException) as caught:
        AccountsApi(sdk).get_accounts(imported_link)
    assert caught.value.status == 410
    assert _error_body(caught.value)["error_code"] == "link_error.deleted"
    assert imported_link not in _all_link_ids(sdk)


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
    body = _error_body(caught.value)
    assert body["error_code"] == "link_error.bad_state"
    assert body["link_error_code"] == "auth_expired"


def test_refresh_products(sdk: moneykit.ApiClient, own_link: str, sandbox_only: str) -> None:
    before = LinksApi(sdk).get_link(own_link).products.transactions
    assert before is not None
    accepted = ProductsApi(sdk).refresh_products(
        own_link, RefreshProductsRequest(products=[Product.TRANSACTIONS])
    )
    assert accepted.link_id == own_link
    httpx.post(f"{sandbox_only}/_sandbox/products/settle").raise_for_status()
    after = LinksApi(sdk).get_link(own_link).products.transactions
    assert after is not None and after.refreshed_at is not None
    assert before.refreshed_at is None or after.refreshed_at >= before.refreshed_at
    # MoneyKit allows one transactions refresh an hour per link.
    with pytest.raises(ApiException) as caught:
        ProductsApi(sdk).refresh_products(
            own_link, RefreshProductsRequest(products=[Product.TRANSACTIONS])
        )
    assert caught.value.status == 429
    assert caught.value.headers is not None and int(caught.value.headers["Retry-After"]) > 0


def test_a_product_is_fetched_on_refresh_and_a_failure_is_on_the_product(
    sdk: moneykit.ApiClient, sandbox_only: str
) -> None:
    completion = _link_through_connect(
        sandbox_only,
        _new_session(
            sdk,
            settings=LinkSessionSettingOverrides(
                products=ProductsSettings(transactions=TransactionsProductSettings())
            ),
        ),
    )
    link_id = (
        LinkSessionApi(sdk)
        .exchange_token(ExchangeTokenRequest(exchangeable_token=completion["exchangeable_token"]))
        .link.link_id
    )
    unfetched = LinksApi(sdk).get_link(link_id).products.transactions
    assert unfetched is not None
    assert (unfetched.refreshed_at, unfetched.has_history) == (None, False)
    assert TransactionsApi(sdk).get_transactions(link_id).transactions == []

    httpx.post(
        f"{sandbox_only}/_sandbox/links/{link_id}/refresh-failure",
        json={"products": ["transactions"], "error_code": "timeout"},
    ).raise_for_status()
    started = ProductsApi(sdk).refresh_products(
        link_id, RefreshProductsRequest(products=[Product.TRANSACTIONS])
    )
    running = started.products.transactions
    assert running is not None and running.last_attempted_at is not None
    assert running.refreshed_at is None  # in progress
    httpx.post(f"{sandbox_only}/_sandbox/products/settle").raise_for_status()
    failed = LinksApi(sdk).get_link(link_id)
    assert failed.state.value == "connected"
    assert failed.products.transactions is not None
    assert failed.products.transactions.error_code == LinkProductError.TIMEOUT
    assert failed.products.transactions.error_message


def test_rate_limit_is_429_with_retry_after(sdk: moneykit.ApiClient, imported_link: str) -> None:
    links_api = LinksApi(sdk)
    with pytest.raises(ApiException) as caught:
        # PATCH /links/{id} allows 4 a minute per link.
        for _ in range(10):
            links_api.update_link(imported_link, UpdateLinkRequest(link_tags=["customer:x"]))
    assert caught.value.status == 429
    assert _error_body(caught.value)["error_code"] == "api_error.rate_limit_exceeded"
    assert caught.value.headers is not None
    assert int(caught.value.headers["Retry-After"]) > 0


# ------------------------------------------------------------------------------------ import
def _import_row(
    account_id: str, amount: str, day: str, transaction_id: str | None = None
) -> TransactionImportData:
    return TransactionImportData(
        account_id=account_id,
        amount=amount,
        date=ModelDate(actual_instance=day),
        transaction_id=transaction_id,
    )


def _import_request(customer_id: str) -> ImportLinkRequest:
    row = _import_row("their-chk", "-42.10", "2024-01-02", transaction_id="their-t1")
    # SDK 0.2.3 sends a string date JSON-quoted (protocol doc §3.2 #8); this is the documented
    # workaround, which sends it plain.
    row.additional_properties["date"] = "2024-01-02"
    # Left as the SDK sends it: `"\"2024-01-03\""`, which MoneyKit's servers must accept too.
    quoted = _import_row("their-chk", "1500.00", "2024-01-03")
    return ImportLinkRequest(
        customer_user=CustomerUser(id=customer_id),
        institution_id="moneykit-creds-bank",
        accounts=[
            AccountImportData(
                account_id="their-chk",
                name="Imported Checking",
                type="checking",
                mask="0042",
                balances=AccountBalances(current=1234.5, currency="USD"),
            )
        ],
        transactions=[row, quoted],
    )


@pytest.fixture
def imported_link(sdk: moneykit.ApiClient) -> str:
    """A link made with POST /links/import: works against the sandbox and the real MoneyKit."""
    return LinksApi(sdk).import_link(_import_request("cust_contract_import")).link_id


def test_import_link(sdk: moneykit.ApiClient) -> None:
    link = LinksApi(sdk).import_link(_import_request("cust_contract_import"))
    assert link.state.value == "error"
    assert link.error_code is not None and link.error_code.value == "auth_expired"
    txns = (
        TransactionsApi(sdk)
        .get_transactions(link.link_id, start_date=date(2024, 1, 1), end_date=date(2024, 1, 31))
        .transactions
    )
    assert {(t.date_.isoformat(), t.type.value, t.amount) for t in txns} == {
        ("2024-01-02", "debit", "42.10"),
        ("2024-01-03", "credit", "1500.00"),
    }


def test_import_transactions(sdk: moneykit.ApiClient, imported_link: str) -> None:
    row = _import_row("their-chk", "-5.00", "2024-01-09")
    link = LinksApi(sdk).import_transactions(
        imported_link, ImportTransactionsRequest(transactions=[row])
    )
    assert link.link_id == imported_link
    txns = TransactionsApi(sdk).get_transactions(
        imported_link, start_date=date(2024, 1, 9), end_date=date(2024, 1, 9)
    )
    assert txns.total == 1 and txns.transactions[0].amount == "5.00"


# ---------------------------------------------------------------------------------- accounts
def test_get_accounts(sdk: moneykit.ApiClient, imported_link: str) -> None:
    accounts = AccountsApi(sdk).get_accounts(imported_link)
    assert accounts.link.link_id == imported_link
    assert [a.account_mask for a in accounts.accounts] == ["0042"]
    assert accounts.accounts[0].balances.current == 1234.5


def test_get_account(sdk: moneykit.ApiClient, imported_link: str) -> None:
    account_id = AccountsApi(sdk).get_accounts(imported_link).accounts[0].account_id
    one = AccountsApi(sdk).get_account(imported_link, account_id)
    assert one.account.account_id == account_id


def test_unknown_account_is_a_404_the_sdk_models(
    sdk: moneykit.ApiClient, imported_link: str
) -> None:
    with pytest.raises(NotFoundException) as caught:
        AccountsApi(sdk).get_account(imported_link, "acc_not_there")
    assert LinkErrorNotFoundResponse.from_dict(_error_body(caught.value)) is not None


def test_token_with_a_narrow_scope_cannot_create_link_sessions(
    contract_target: ContractTarget,
) -> None:
    config = moneykit.Configuration(host=contract_target.base_url)
    with moneykit.ApiClient(config) as client:
        token = AccessTokenApi(client).create_access_token(
            grant_type="client_credentials",
            scope="institutions:read",
            client_id=contract_target.client_id,
            client_secret=contract_target.client_secret,
        )
        config.access_token = token.access_token
        assert InstitutionsApi(client).get_institutions(limit=1).institutions
        with pytest.raises(ForbiddenException):
            _new_session(client)


def test_get_account_numbers(sdk: moneykit.ApiClient, own_link: str) -> None:
    numbers = AccountNumbersApi(sdk).get_account_numbers(own_link)
    checking = next(a for a in numbers.accounts if a.name == "Contract Checking")
    assert checking.numbers.ach[0].account_number == "000123456789"
    assert checking.numbers.ach[0].routing_number == "011000015"


def test_get_identities(sdk: moneykit.ApiClient, own_link: str) -> None:
    identity = IdentityApi(sdk).get_identities(own_link)
    assert identity.accounts and all(a.owners and a.owners[0].names for a in identity.accounts)


def test_products_not_granted_are_403(sdk: moneykit.ApiClient, imported_link: str) -> None:
    with pytest.raises(ForbiddenException) as caught:
        IdentityApi(sdk).get_identities(imported_link)
    assert _error_body(caught.value)["error_code"] == "link_error.forbidden_action"


# ------------------------------------------------------------------------------ transactions
def test_get_transactions(sdk: moneykit.ApiClient, own_link: str) -> None:
    api = TransactionsApi(sdk)
    first = api.get_transactions(own_link, page=1, size=5)
    assert first.total > 5 and len(first.transactions) == 5
    dates = [t.date_ for t in first.transactions]
    assert dates == sorted(dates, reverse=True)


def test_get_transactions_sync(sdk: moneykit.ApiClient, own_link: str) -> None:
    api = TransactionsApi(sdk)
    seen: set[str] = set()
    cursor = None
    while True:
        # Sync allows few calls a minute per link; large pages keep this within the limit.
        page = api.get_transactions_sync(own_link, cursor=cursor, size=150)
        batch = [t.transaction_id for t in page.transactions.created]
        assert not seen & set(batch)
        seen.update(batch)
        cursor = page.cursor.next
        if not page.has_more:
            break
    assert seen
    assert api.get_transactions_sync(own_link, cursor=cursor).transactions.created == []


def test_correct_enrichment(sdk: moneykit.ApiClient, own_link: str) -> None:
    api = TransactionsApi(sdk)
    txn = api.get_transactions(own_link, size=1).transactions[0]
    corrected = api.correct_enrichment(
        own_link,
        txn.transaction_id,
        BudCategory(category=BudPrimaryCategory.SHOPPING, subcategory=BudSubcategory.HOBBIES),
    )
    assert corrected.transactions[0].enrichment is not None
    assert corrected.transactions[0].enrichment.category.value == "shopping"


# ------------------------------------------------------------------------------- investments
def test_get_holdings(sdk: moneykit.ApiClient, own_link: str) -> None:
    holdings = InvestmentsApi(sdk).get_holdings(own_link)
    assert holdings.holdings and holdings.securities
    assert {h.security_id for h in holdings.holdings} <= {
        s.security_id for s in holdings.securities
    }


def test_get_investment_transactions(sdk: moneykit.ApiClient, own_link: str) -> None:
    page = InvestmentsApi(sdk).get_investment_transactions(own_link, page=1, size=3)
    assert page.total >= 3 and len(page.investment_transactions) == 3


# ------------------------------------------------------------------------------------- users
# SDK 0.2.3 cannot build these three responses from any server: its `from_dict` drops the untyped
# `links` / `accounts` keys and then fails on them as required. The requests still go through the
# SDK; the bodies are read raw (`*_without_preload_content`).
def _raw(response: Any) -> dict[str, Any]:
    assert response.status == 200
    body: dict[str, Any] = json.loads(response.data)
    return body


def test_get_user_links(sdk: moneykit.ApiClient, imported_link: str) -> None:
    body = _raw(UsersApi(sdk).get_user_links_without_preload_content("cust_contract_import"))
    assert imported_link in body["links"]
    assert body["links"][imported_link]["link_id"] == imported_link


def test_get_user_accounts(sdk: moneykit.ApiClient, imported_link: str) -> None:
    body = _raw(UsersApi(sdk).get_user_accounts_without_preload_content("cust_contract_import"))
    assert [a["account_mask"] for a in body["links"][imported_link]] == ["0042"]


def test_get_user_transactions(sdk: moneykit.ApiClient, imported_link: str) -> None:
    body = _raw(
        UsersApi(sdk).get_user_transactions_without_preload_content(
            "cust_contract_import",
            start_date=date(2024, 1, 1),
            end_date=date(2024, 1, 31),
            size=100,
        )
    )
    assert body["total"] >= 2 and isinstance(body["accounts"], list)


# ---------------------------------------------------------------------------------- webhooks
def test_trigger_test_webhook(sdk: moneykit.ApiClient, own_link: str, sandbox_only: str) -> None:
    api = WebhooksApi(sdk)
    request = WebhookTestLinkRequest(
        webhook_event=WebhookLinkTestEvent.PRODUCT_STATE_CHANGED,
        webhook_idempotency_key="contract-idem-1",
    )
    with pytest.raises(BadRequestException) as caught:
        api.trigger_test_link_webhook_event(own_link, request)
    assert _error_body(caught.value)["error_code"] == "link_error.bad_config"

    LinksApi(sdk).update_link(own_link, UpdateLinkRequest(webhook="http://127.0.0.1:9/hook"))
    token = api.trigger_test_link_webhook_event(own_link, request).delivery_token
    deadline = time.monotonic() + 10
    record = None
    while record is None and time.monotonic() < deadline:
        deliveries = httpx.get(f"{sandbox_only}/_sandbox/webhooks").json()["deliveries"]
        record = next((d for d in deliveries if d["delivery_token"] == token), None)
        time.sleep(0.05)
    assert record is not None
    # What MoneyKit's SDK itself makes of the body we sent.
    parsed = Body.from_json(json.dumps(record["payload"]))
    assert parsed.actual_instance is not None
    assert record["payload"]["webhook_event"] == "link.product_refresh"
    assert record["payload"]["webhook_idempotency_key"] == "contract-idem-1"
