"""Linkdesk's own ``MoneyKitClient`` against ``contract_target`` over real HTTP.

The mirror of ``test_sdk_contract.py``: one test (or more) per REST endpoint, plus the error cases
the dashboard and the worker branch on (not found, bad credentials, rate limit, deleted link, bad
state). Where the SDK suite proves the server speaks MoneyKit, this suite proves our client reads
it: typed models, typed errors, the retry rules and the cursors.

By default the target is a sandbox started for the session; with ``MONEYKIT_CONTRACT_BASE_URL``
and credentials it is the real MoneyKit. Links there are made with ``POST /links/import``; tests
that need a link made through Connect or the ``/_sandbox`` controls ask for ``sandbox_only``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest

from linkdesk.moneykit import (
    UNSET,
    AccountBalances,
    AuthenticationError,
    BadRequestError,
    GoneError,
    ImportAccount,
    ImportTransaction,
    LinkBadStateError,
    MoneyKitClient,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from linkdesk.webhooks.verify import JWKS_PATH, JwksCache
from tests.contract.conftest import ContractTarget

pytestmark = pytest.mark.contract

REDIRECT_URI = "http://localhost:8501/oauth_return"
IMPORT_CUSTOMER = "cust_client_import"
ALL_DATA_PRODUCTS = ["account_numbers", "identity", "investments", "transactions"]


class RequestLog:
    """Records what went over the wire (method, path, whether a bearer was sent); never values."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bool]] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append((request.method, request.url.path, "authorization" in request.headers))

    def paths(self, method: str) -> list[str]:
        return [path for m, path, _ in self.requests if m == method]


def _client(target: ContractTarget, **options: Any) -> MoneyKitClient:
    return MoneyKitClient(
        client_id=target.client_id,
        client_secret=target.client_secret,
        base_url=target.base_url,
        **options,
    )


@pytest.fixture
def client(contract_target: ContractTarget) -> Iterator[MoneyKitClient]:
    with _client(contract_target) as c:
        yield c


@pytest.fixture
def logged(contract_target: ContractTarget) -> Iterator[tuple[MoneyKitClient, RequestLog]]:
    log = RequestLog()
    with httpx.Client(timeout=10.0, event_hooks={"request": [log]}) as http:
        yield _client(contract_target, http_client=http), log


def _connect_page_login(sandbox_url: str, session_token: str) -> dict[str, Any]:
    """Log in to Credentials Bank and pick every account, as the hosted Connect page does."""
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
        ids = [account["account_id"] for account in login.json()["accounts"]]
        done = page.post("/connect-api/complete", json={"account_ids": ids})
        done.raise_for_status()
        completion: dict[str, Any] = done.json()["completion"]
        return completion


def _unique_customer() -> str:
    return f"cust_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def own_link(client: MoneyKitClient, sandbox_only: str) -> str:
    """A connected link made through Connect by this test, with every data product granted."""
    session = client.create_link_session(
        customer_user_id=_unique_customer(),
        redirect_uri=REDIRECT_URI,
        link_tags=["customer:cust_client", "app:contract"],
        products=ALL_DATA_PRODUCTS,
        prefetch=True,
        custom_sandbox_data={
            "accounts": [
                {
                    "account_type": "depository.checking",
                    "name": "Client Checking",
                    "account_number": "000987654321",
                    "routing_number": "011000015",
                },
                {
                    "account_type": "investment.brokerage",
                    "name": "Client Brokerage",
                    "account_number": "77778888",
                },
            ]
        },
    )
    completion = _connect_page_login(sandbox_only, session.link_session_token)
    link_id = client.exchange_token(completion["exchangeable_token"]).link.link_id
    # The prefetch lands a moment later; land it now instead of waiting.
    httpx.post(f"{sandbox_only}/_sandbox/products/settle").raise_for_status()
    return link_id


def _import(client: MoneyKitClient, customer_id: str = IMPORT_CUSTOMER) -> str:
    link = client.import_link(
        customer_user_id=customer_id,
        institution_id="moneykit-creds-bank",
        accounts=[
            ImportAccount(
                account_id="our-chk",
                name="Imported Checking",
                type="checking",
                mask="0077",
                balances=AccountBalances(current=2500.25, currency="USD"),
            )
        ],
        transactions=[
            ImportTransaction(
                account_id="our-chk",
                amount="-12.34",
                date=date(2024, 2, 3),
                transaction_id="our-t1",
                description="Coffee",
            ),
            {"account_id": "our-chk", "amount": "900.00", "date": "2024-02-05"},
        ],
    )
    return link.link_id


@pytest.fixture
def imported_link(client: MoneyKitClient) -> str:
    """A link made with ``POST /links/import``: works on the sandbox and on the real MoneyKit."""
    return _import(client)


# ------------------------------------------------------------------------------------ auth
def test_access_token_is_fetched_once_and_reused(
    logged: tuple[MoneyKitClient, RequestLog],
) -> None:
    client, log = logged
    client.introspect()
    client.iter_institutions(limit=1).__next__()
    assert log.paths("POST").count("/auth/token") == 1
    assert [bearer for method, _, bearer in log.requests if method == "GET"] == [True, True]


def test_bad_credentials_raise_authentication_error(contract_target: ContractTarget) -> None:
    with (
        MoneyKitClient(
            client_id=contract_target.client_id,
            client_secret="not-the-secret",
            base_url=contract_target.base_url,
        ) as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.introspect()
    assert caught.value.status_code == 401
    assert caught.value.error_code == "api_error.auth.unauthorized"
    assert "not-the-secret" not in str(caught.value)


def test_rejected_token_is_replaced_once(logged: tuple[MoneyKitClient, RequestLog]) -> None:
    client, log = logged
    # A token MoneyKit never issued stands in for a revoked or early-expired one.
    client._token = "made-up-token"
    client._token_expires_at = time.time() + 3600
    assert client.introspect().client_id == client.client_id
    assert [(m, p) for m, p, _ in log.requests] == [
        ("GET", "/auth/introspect"),
        ("POST", "/auth/token"),
        ("GET", "/auth/introspect"),
    ]


def test_no_scope_asked_grants_the_apps_scopes(
    client: MoneyKitClient, contract_target: ContractTarget
) -> None:
    # What Linkdesk does: MoneyKit documents an omitted scope as every action the app may take.
    granted = (client.introspect().scope or "").split()
    assert granted
    if contract_target.is_sandbox:  # the scope names are the sandbox's reading
        assert {"links:read", "links:write", "link_session:write", "accounts:read"} <= set(granted)


def test_a_narrow_scope_is_asked_for_and_enforced(
    contract_target: ContractTarget, sandbox_only: str
) -> None:
    with _client(contract_target, scope="institutions:read  links:read") as narrow:
        granted = (narrow.introspect().scope or "").split()
        assert granted == ["institutions:read", "links:read"]
        assert next(narrow.iter_institutions(limit=1)).institution_id
        with pytest.raises(PermissionDeniedError) as caught:
            narrow.create_link_session(
                customer_user_id=_unique_customer(), redirect_uri=REDIRECT_URI
            )
    assert caught.value.status_code == 403
    assert caught.value.error_code


def test_introspect(client: MoneyKitClient, contract_target: ContractTarget) -> None:
    app_client = client.introspect()
    assert app_client.client_id == contract_target.client_id
    assert app_client.app is not None and app_client.app.app_id


def test_webhook_keys_are_fetched_without_a_bearer(contract_target: ContractTarget) -> None:
    """MoneyKit's JWKS is read in one place: the webhook verifier's key cache."""
    log = RequestLog()
    with httpx.Client(timeout=10.0, event_hooks={"request": [log]}) as http:
        cache = JwksCache.for_base_url(contract_target.base_url, http_client=http)
        document = http.get(contract_target.base_url + JWKS_PATH).json()
        kids = [key["kid"] for key in document["keys"]]
        assert kids and all(cache.key(kid) is not None for kid in kids)
        assert cache.key("not-a-published-kid") is None
    assert cache.fetches == 1  # an unknown kid does not refetch within min_refetch
    assert set(log.requests) == {("GET", JWKS_PATH, False)}


# ---------------------------------------------------------------------------- link session
def test_create_link_session(client: MoneyKitClient) -> None:
    session = client.create_link_session(
        customer_user_id=_unique_customer(),
        redirect_uri=REDIRECT_URI,
        webhook="http://localhost:8501/webhooks/moneykit",
        link_tags=["customer:cust_client"],
        products=["transactions", "identity"],
    )
    assert session.link_session_token
    assert session.link_session_token not in repr(session)


def test_create_link_session_for_unknown_link_is_not_found(client: MoneyKitClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.create_link_session(
            customer_user_id=_unique_customer(),
            redirect_uri=REDIRECT_URI,
            existing_link_id="mk_does_not_exist",
        )
    assert caught.value.error_code == "link_error.not_found"


def test_exchange_token_works_once(client: MoneyKitClient, sandbox_only: str) -> None:
    session = client.create_link_session(
        customer_user_id=_unique_customer(),
        redirect_uri=REDIRECT_URI,
        link_tags=["customer:cust_client_x"],
    )
    completion = _connect_page_login(sandbox_only, session.link_session_token)
    exchanged = client.exchange_token(completion["exchangeable_token"])
    assert exchanged.resolved_link_id == completion["link_id"]
    assert exchanged.link.state == "connected"
    assert exchanged.link.link_tags == ["customer:cust_client_x"]
    with pytest.raises(BadRequestError) as caught:
        client.exchange_token(completion["exchangeable_token"])
    assert caught.value.error_code == "link_session_error.invalid_token_exchange"


# ----------------------------------------------------------------------------- institutions
def test_institutions_are_paged(client: MoneyKitClient, contract_target: ContractTarget) -> None:
    first = client.list_institutions(limit=5)
    assert len(first.institutions) == 5 and first.next_cursor
    ids = [inst.institution_id for inst in client.iter_institutions(limit=5)]
    assert len(ids) == len(set(ids)) >= 15
    assert ids[:5] == [inst.institution_id for inst in first.institutions]
    featured = list(client.iter_institutions(featured=True, limit=100))
    assert featured and all(inst.is_featured for inst in featured)
    if contract_target.is_sandbox:
        assert {"moneykit-creds-bank", "moneykit-instant-bank", "moneykit-oauth-bank"} <= set(ids)
        named = client.list_institutions(name="Credentials", limit=10).institutions
        assert [inst.name for inst in named] == ["Credentials Bank"]
        assert named[0].avatar and named[0].avatar.endswith("/avatar.svg")


def test_get_institution(client: MoneyKitClient, sandbox_only: str) -> None:
    inst = client.get_institution("moneykit-instant-bank")
    assert inst.name == "Instant Bank" and inst.country == "US"
    assert inst.avatar is not None and inst.avatar.startswith(sandbox_only)
    content_type, body = client.fetch_image(inst.avatar)
    assert content_type == "image/svg+xml" and body.startswith(b"<svg")


def test_unknown_institution_is_not_found(client: MoneyKitClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_institution("no-such-bank")
    assert caught.value.error_code == "institution_error.not_found"


# ----------------------------------------------------------------------------------- links
def test_iter_links_lists_every_link_exactly_once(
    client: MoneyKitClient, contract_target: ContractTarget, imported_link: str
) -> None:
    first = client.list_links(limit=500)
    ids = [item.link_id for item in client.iter_links(limit=500)]
    assert len(ids) == len(set(ids))
    assert imported_link in ids
    assert ids[: len(first.links)] == [item.link_id for item in first.links]
    if contract_target.is_sandbox:
        # 300 demo links at 500 a page would fit one page; the links made by earlier tests
        # do not change that, so the cursor is checked on a bigger limit too.
        assert len(ids) >= 300
        assert ids == [item.link_id for item in client.iter_links(limit=5000)]


def test_get_link(client: MoneyKitClient, imported_link: str) -> None:
    link = client.get_link(imported_link)
    assert link.link_id == imported_link
    assert link.institution_id == "moneykit-creds-bank"
    assert link.institution_avatar
    assert link.state == "error" and link.error_code == "auth_expired"
    assert "transactions" in link.products


def test_unknown_link_is_not_found_with_a_request_id(client: MoneyKitClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_link("mk_does_not_exist")
    error = caught.value
    assert error.status_code == 404
    assert error.error_code == "link_error.not_found"
    assert error.error_message
    assert error.request_id
    assert error.request_id in error.user_message


def test_update_link(client: MoneyKitClient, imported_link: str) -> None:
    updated = client.update_link(
        imported_link,
        webhook="https://example.com/hook",
        link_tags=["customer:cust_client", "vip"],
    )
    assert updated.link_tags == ["customer:cust_client", "vip"]
    assert updated.webhook == "https://example.com/hook"
    # Only the tags sent: the webhook stays as it was.
    kept = client.update_link(imported_link, webhook=UNSET, link_tags=["customer:cust_client"])
    assert kept.webhook == "https://example.com/hook"
    assert kept.link_tags == ["customer:cust_client"]
    cleared = client.update_link(imported_link, webhook=None)
    assert cleared.webhook is None
    assert client.get_link(imported_link).webhook is None


def test_delete_link_makes_data_calls_gone(client: MoneyKitClient, imported_link: str) -> None:
    client.delete_link(imported_link)
    with pytest.raises(GoneError) as caught:
        client.get_accounts(imported_link)
    assert caught.value.status_code == 410
    assert caught.value.error_code == "link_error.deleted"
    assert imported_link not in {item.link_id for item in client.iter_links(limit=5000)}


def test_reset_link_then_refresh_is_bad_state(client: MoneyKitClient, own_link: str) -> None:
    link = client.reset_link(own_link)
    assert link.link_id == own_link
    assert (link.state, link.error_code) == ("error", "auth_expired")
    with pytest.raises(LinkBadStateError) as caught:
        client.refresh_products(own_link, ["transactions"])
    assert caught.value.status_code == 422
    assert caught.value.error_code == "link_error.bad_state"
    assert caught.value.link_error_code == "auth_expired"


def test_unexchanged_link_is_bad_state(client: MoneyKitClient, sandbox_only: str) -> None:
    session = client.create_link_session(
        customer_user_id=_unique_customer(), redirect_uri=REDIRECT_URI
    )
    link_id = _connect_page_login(sandbox_only, session.link_session_token)["link_id"]
    assert client.get_link(link_id).state == "awaiting_token_exchange"
    # (The sandbox serves the plain account list in any state; the other data calls refuse.)
    with pytest.raises(LinkBadStateError) as caught:
        client.get_transactions(link_id)
    assert caught.value.error_code == "link_error.bad_state"


def test_refresh_products(contract_target: ContractTarget, own_link: str) -> None:
    sleeps: list[float] = []
    with _client(contract_target, sleep=sleeps.append) as client:
        before = client.get_link(own_link).products["transactions"]
        assert before is not None
        client.refresh_products(own_link, ["transactions"])
        httpx.post(f"{contract_target.base_url}/_sandbox/products/settle").raise_for_status()
        after = client.get_link(own_link).products["transactions"]
        assert after is not None and after.refreshed_at is not None
        assert before.refreshed_at is None or after.refreshed_at >= before.refreshed_at
        # One transactions refresh an hour per link: the second is refused, and not retried.
        with pytest.raises(RateLimitError) as caught:
            client.refresh_products(own_link, ["transactions"])
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    assert sleeps == []


def test_product_refresh_states_read_by_our_client(
    client: MoneyKitClient, sandbox_only: str
) -> None:
    session = client.create_link_session(
        customer_user_id=_unique_customer(), redirect_uri=REDIRECT_URI, products=["transactions"]
    )
    completion = _connect_page_login(sandbox_only, session.link_session_token)
    link_id = client.exchange_token(completion["exchangeable_token"]).link.link_id
    unfetched = client.get_link(link_id).products["transactions"]
    assert unfetched is not None and unfetched.refreshed_at is None
    assert unfetched.last_attempted_at is None
    httpx.post(
        f"{sandbox_only}/_sandbox/links/{link_id}/refresh-failure",
        json={"products": ["transactions"], "error_code": "institution_error"},
    ).raise_for_status()
    client.refresh_products(link_id, ["transactions"])
    running = client.get_link(link_id).products["transactions"]
    assert running is not None and running.last_attempted_at is not None
    assert running.refreshed_at is None
    httpx.post(f"{sandbox_only}/_sandbox/products/settle").raise_for_status()
    failed = client.get_link(link_id).products["transactions"]
    assert failed is not None
    assert failed.error_code == "institution_error" and failed.error_message
    assert failed.refreshed_at is None


# -------------------------------------------------------------------------------- rate limit
@pytest.fixture
def fault_on_link(sandbox_only: str, imported_link: str) -> Iterator[str]:
    """Every ``GET /links/<imported_link>`` answers 429 with ``Retry-After: 7`` while it lasts."""
    rule = {
        "pattern": f"^GET /links/{imported_link}$",
        "rate_limit_rate": 1.0,
        "retry_after_s": 7,
    }
    httpx.post(f"{sandbox_only}/_sandbox/faults", json={"rules": [rule]}).raise_for_status()
    try:
        yield imported_link
    finally:
        httpx.delete(f"{sandbox_only}/_sandbox/faults").raise_for_status()


def test_rate_limit_raises_with_retry_after(
    contract_target: ContractTarget, fault_on_link: str
) -> None:
    with _client(contract_target, max_retries=0) as client:
        with pytest.raises(RateLimitError) as caught:
            client.get_link(fault_on_link)
        # Other routes are untouched by the fault.
        assert client.get_accounts(fault_on_link).accounts
    assert caught.value.status_code == 429
    assert caught.value.error_code == "api_error.rate_limit_exceeded"
    assert caught.value.retry_after == 7.0
    assert caught.value.request_id


def test_rate_limit_wait_is_obeyed_before_giving_up(
    contract_target: ContractTarget, fault_on_link: str
) -> None:
    sleeps: list[float] = []
    with (
        _client(contract_target, max_retries=2, sleep=sleeps.append) as client,
        pytest.raises(RateLimitError),
    ):
        client.get_link(fault_on_link)
    assert sleeps == [7.0, 7.0]


def test_fault_cleared_link_reads_again(client: MoneyKitClient, sandbox_only: str) -> None:
    link_id = _import(client)
    rule = {"pattern": f"^GET /links/{link_id}$", "rate_limit_rate": 1.0}
    httpx.post(f"{sandbox_only}/_sandbox/faults", json={"rules": [rule]}).raise_for_status()
    httpx.delete(f"{sandbox_only}/_sandbox/faults").raise_for_status()
    assert client.with_options(max_retries=0).get_link(link_id).link_id == link_id


def test_real_patch_limit_is_a_rate_limit_error(
    contract_target: ContractTarget, imported_link: str
) -> None:
    with _client(contract_target, max_retries=0) as client, pytest.raises(RateLimitError) as caught:
        # PATCH /links/{id} allows 4 a minute per link.
        for _ in range(10):
            client.update_link(imported_link, link_tags=["customer:x"])
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


# ------------------------------------------------------------------------------------ import
def test_import_link(client: MoneyKitClient) -> None:
    link_id = _import(client, _unique_customer())
    link = client.get_link(link_id)
    assert (link.state, link.error_code) == ("error", "auth_expired")
    page = client.get_transactions(link_id, start_date=date(2024, 2, 1), end_date=date(2024, 2, 29))
    assert {(t.date.isoformat(), t.type, t.amount) for t in page.transactions} == {
        ("2024-02-03", "debit", "12.34"),
        ("2024-02-05", "credit", "900.00"),
    }
    assert sorted(str(t.signed_amount) for t in page.transactions) == ["-12.34", "900.00"]


def test_import_transactions(client: MoneyKitClient, imported_link: str) -> None:
    link = client.import_transactions(
        imported_link,
        [ImportTransaction(account_id="our-chk", amount="-7.50", date=date(2024, 2, 10))],
    )
    assert link.link_id == imported_link
    page = client.get_transactions(
        imported_link, start_date=date(2024, 2, 10), end_date=date(2024, 2, 10)
    )
    assert page.total == 1
    assert (page.transactions[0].amount, page.transactions[0].type) == ("7.50", "debit")


# ---------------------------------------------------------------------------------- accounts
def test_get_accounts(client: MoneyKitClient, imported_link: str) -> None:
    accounts = client.get_accounts(imported_link)
    assert accounts.link is not None and accounts.link.link_id == imported_link
    assert [a.account_mask for a in accounts.accounts] == ["0077"]
    assert accounts.accounts[0].balances.current == 2500.25


def test_get_account(client: MoneyKitClient, imported_link: str) -> None:
    account_id = client.get_accounts(imported_link).accounts[0].account_id
    one = client.get_account(imported_link, account_id)
    assert one.account.account_id == account_id
    assert one.link is not None and one.link.link_id == imported_link


def test_get_account_numbers(client: MoneyKitClient, own_link: str) -> None:
    numbers = client.get_account_numbers(own_link)
    checking = next(a for a in numbers.accounts if a.name == "Client Checking")
    assert checking.numbers.ach[0].account_number == "000987654321"
    assert checking.numbers.ach[0].routing_number == "011000015"


def test_get_identities(client: MoneyKitClient, own_link: str) -> None:
    everyone = client.get_identities(own_link)
    assert len(everyone.accounts) == 2
    assert all(a.owners and a.owners[0].names for a in everyone.accounts)
    first_id = everyone.accounts[0].account_id
    only = client.get_identities(own_link, account_ids=[first_id])
    assert [a.account_id for a in only.accounts] == [first_id]


def test_product_not_granted_is_permission_denied(
    client: MoneyKitClient, imported_link: str
) -> None:
    with pytest.raises(PermissionDeniedError) as caught:
        client.get_identities(imported_link)
    assert caught.value.error_code == "link_error.forbidden_action"


# ------------------------------------------------------------------------------ transactions
def test_get_transactions(client: MoneyKitClient, own_link: str) -> None:
    first = client.get_transactions(own_link, page=1, size=5)
    assert first.total > 5 and len(first.transactions) == 5
    dates = [t.date for t in first.transactions]
    assert dates == sorted(dates, reverse=True)
    second = client.get_transactions(own_link, page=2, size=5)
    assert not {t.transaction_id for t in first.transactions} & {
        t.transaction_id for t in second.transactions
    }


def test_iter_transactions_sync_follows_the_cursor(client: MoneyKitClient, own_link: str) -> None:
    pages = list(client.iter_transactions_sync(own_link, size=100))
    created = [t.transaction_id for page in pages for t in page.transactions.created]
    assert created and len(created) == len(set(created))
    assert [page.has_more for page in pages] == [True] * (len(pages) - 1) + [False]
    last_cursor = pages[-1].next_cursor
    assert last_cursor
    caught_up = client.sync_transactions(own_link, last_cursor)
    assert caught_up.transactions.created == [] and not caught_up.has_more


def test_correct_enrichment(client: MoneyKitClient, own_link: str) -> None:
    start = client.sync_transactions(own_link, size=500)
    while start.has_more:
        start = client.sync_transactions(own_link, start.next_cursor, size=500)
    txn = client.get_transactions(own_link, size=1).transactions[0]
    corrected = client.correct_enrichment(own_link, txn.transaction_id, "shopping", "hobbies")
    enrichment = corrected.transactions[0].enrichment
    assert enrichment is not None and enrichment.category is not None
    assert enrichment.category.value == "shopping"
    # The correction reaches sync as an update.
    changes = client.sync_transactions(own_link, start.next_cursor).transactions
    assert [t.transaction_id for t in changes.updated] == [txn.transaction_id]


# ------------------------------------------------------------------------------- investments
def test_get_holdings(client: MoneyKitClient, own_link: str) -> None:
    holdings = client.get_holdings(own_link)
    assert holdings.holdings and holdings.securities
    assert {h.security_id for h in holdings.holdings} <= {
        s.security_id for s in holdings.securities
    }
    assert all(isinstance(h.quantity, str) for h in holdings.holdings)


def test_get_investment_transactions(client: MoneyKitClient, own_link: str) -> None:
    page = client.get_investment_transactions(own_link, page=1, size=3)
    assert page.total >= 3 and len(page.investment_transactions) == 3
    used = {t.security_id for t in page.investment_transactions if t.security_id}
    assert used <= {s.security_id for s in page.securities}


# ------------------------------------------------------------------------------------- users
@pytest.fixture
def customer_link(client: MoneyKitClient) -> tuple[str, str]:
    customer = _unique_customer()
    return customer, _import(client, customer)


def test_get_user_links(client: MoneyKitClient, customer_link: tuple[str, str]) -> None:
    customer, link_id = customer_link
    links = client.get_user_links(customer).links
    assert list(links) == [link_id]
    assert links[link_id].link_id == link_id


def test_get_user_accounts(client: MoneyKitClient, customer_link: tuple[str, str]) -> None:
    customer, link_id = customer_link
    accounts = client.get_user_accounts(customer).links
    assert [a.account_mask for a in accounts[link_id]] == ["0077"]


def test_get_user_transactions(client: MoneyKitClient, customer_link: tuple[str, str]) -> None:
    customer, _ = customer_link
    page = client.get_user_transactions(
        customer, start_date=date(2024, 2, 1), end_date=date(2024, 2, 29), size=100
    )
    assert page.total == 2
    assert sorted(t.amount for t in page.transactions) == ["12.34", "900.00"]


# ---------------------------------------------------------------------------------- webhooks
def test_trigger_test_webhook(client: MoneyKitClient, own_link: str, sandbox_only: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        client.trigger_test_webhook(
            own_link, webhook_event="link.state_changed", idempotency_key="client-idem-0"
        )
    assert caught.value.error_code == "link_error.bad_config"

    client.update_link(own_link, webhook="http://127.0.0.1:9/hook")
    result = client.trigger_test_webhook(
        own_link, webhook_event="link.state_changed", idempotency_key="client-idem-1"
    )
    deadline = time.monotonic() + 10
    record = None
    while record is None and time.monotonic() < deadline:
        deliveries = httpx.get(f"{sandbox_only}/_sandbox/webhooks").json()["deliveries"]
        record = next((d for d in deliveries if d["delivery_token"] == result.delivery_token), None)
        time.sleep(0.05)
    assert record is not None
    assert record["payload"]["webhook_event"] == "link.state_changed"
    assert record["payload"]["webhook_idempotency_key"] == "client-idem-1"
