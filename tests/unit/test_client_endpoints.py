"""Request shapes and retry rules of the MoneyKitClient endpoint methods, against respx.

Each method is checked for what goes over the wire (method, path, query, body, auth header) and
for reading MoneyKit's documented response into its model. The retry table at the end pins which
calls may be repeated after the server may have acted on them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pydantic
import pytest
import respx

from linkdesk.moneykit import (
    UNSET,
    AccountBalances,
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    GoneError,
    ImportAccount,
    ImportTransaction,
    InternalServerError,
    LinkBadStateError,
    MoneyKitClient,
    PermissionDeniedError,
    RateLimitError,
)
from tests.unit.test_client import ACCESS_TOKEN, BASE, SECRET, link_body, token_response


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        mock.post("/auth/token").mock(return_value=token_response())
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> Iterator[MoneyKitClient]:
    c = MoneyKitClient(
        client_id="cid", client_secret=SECRET, base_url=BASE, max_retries=2, sleep=sleeps.append
    )
    c._random = lambda: 0.5
    yield c
    c.close()


def account(account_id: str = "acc_1", **extra: Any) -> dict[str, Any]:
    body = {
        "account_id": account_id,
        "account_type": "depository.checking",
        "name": "Checking",
        "account_mask": "1234",
        "balances": {"currency": "USD", "current": 10.5, "available": 9},
    }
    body.update(extra)
    return body


def txn(transaction_id: str = "t1", **extra: Any) -> dict[str, Any]:
    body = {
        "transaction_id": transaction_id,
        "account_id": "acc_1",
        "amount": "12.30",
        "type": "debit",
        "currency": "USD",
        "date": "2024-01-02",
        "pending": False,
    }
    body.update(extra)
    return body


def query(route: respx.Route, call: int = 0) -> list[tuple[str, str]]:
    return list(route.calls[call].request.url.params.multi_items())


def sent_json(route: respx.Route, call: int = 0) -> Any:
    return json.loads(route.calls[call].request.content)


def bearer(route: respx.Route, call: int = 0) -> str | None:
    return route.calls[call].request.headers.get("authorization")


# -- auth ----------------------------------------------------------------------------------------


def test_introspect(router, client):
    route = router.get("/auth/introspect").mock(
        return_value=httpx.Response(
            200,
            json={
                "client_id": "cid",
                "client_name": "Linkdesk",
                "scope": "links:read",
                "app": {"app_id": "app_1", "name": "Linkdesk", "id": "app_1"},
                "new_field": 1,
            },
        )
    )
    info = client.introspect()
    assert info.client_id == "cid" and info.app is not None and info.app.app_id == "app_1"
    assert bearer(route) == f"Bearer {ACCESS_TOKEN}"


# -- links ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "body"),
    [
        ({"webhook": "https://h.test/x"}, {"webhook": "https://h.test/x"}),
        ({"webhook": None}, {"webhook": None}),
        ({"link_tags": ["customer:c1", "vip"]}, {"link_tags": ["customer:c1", "vip"]}),
        ({"webhook": UNSET, "link_tags": []}, {"link_tags": []}),
        ({"webhook": None, "link_tags": ("a",)}, {"webhook": None, "link_tags": ["a"]}),
    ],
    ids=["set-webhook", "clear-webhook", "tags-only", "unset-webhook", "both"],
)
def test_update_link_body(router, client, kwargs, body):
    route = router.patch("/links/l%2F1").mock(return_value=httpx.Response(200, json=link_body()))
    client.update_link("l/1", **kwargs)
    assert sent_json(route) == body
    assert route.calls[0].request.headers["content-type"] == "application/json"


def test_update_link_needs_something_to_change(client):
    with pytest.raises(ValueError, match="nothing to update"):
        client.update_link("l1")
    with pytest.raises(TypeError):
        client.update_link("l1", link_tags="customer:c1")


def test_delete_link(router, client):
    route = router.delete("/links/l1").mock(return_value=httpx.Response(204))
    assert client.delete_link("l1") is None
    assert route.calls[0].request.content == b""


def test_delete_of_a_deleted_link_is_gone(router, client):
    router.delete("/links/l1").mock(
        return_value=httpx.Response(410, json={"error_code": "link_error.deleted"})
    )
    with pytest.raises(GoneError):
        client.delete_link("l1")


# -- import --------------------------------------------------------------------------------------


def test_import_link_body(router, client):
    route = router.post("/links/import").mock(
        return_value=httpx.Response(200, json=link_body("l_imp", state="error"))
    )
    link = client.import_link(
        customer_user_id="cust_0001",
        institution_id="mx.chase",
        provider="mx",
        accounts=[
            ImportAccount(
                account_id="a1",
                name="Checking",
                type="checking",
                mask="0042",
                balances=AccountBalances(current=1.5, currency="USD"),
            )
        ],
        transactions=[
            ImportTransaction.model_validate(
                {
                    "account_id": "a1",
                    "amount": Decimal("-42.10"),
                    "date": date(2024, 1, 2),
                    "transaction_id": "t1",
                }
            ),
            {"account_id": "a1", "amount": "7", "date": datetime(2024, 1, 3, 23, 0, tzinfo=UTC)},
        ],
    )
    assert link.link_id == "l_imp"
    assert sent_json(route) == {
        "customer_user": {"id": "cust_0001"},
        "institution_id": "mx.chase",
        "provider": "mx",
        "accounts": [
            {
                "account_id": "a1",
                "name": "Checking",
                "type": "checking",
                "mask": "0042",
                "balances": {"current": 1.5, "currency": "USD"},
            }
        ],
        # Plain calendar days, never a JSON-quoted string or a datetime.
        "transactions": [
            {"account_id": "a1", "amount": "-42.10", "date": "2024-01-02", "transaction_id": "t1"},
            {"account_id": "a1", "amount": "7", "date": "2024-01-03"},
        ],
    }


def test_import_transactions_body(router, client):
    route = router.post("/links/l1/import/transactions").mock(
        return_value=httpx.Response(200, json=link_body("l1"))
    )
    client.import_transactions(
        "l1", [{"account_id": "a1", "amount": "-5.00", "date": "2024-01-09"}]
    )
    assert sent_json(route) == {
        "transactions": [{"account_id": "a1", "amount": "-5.00", "date": "2024-01-09"}]
    }


@pytest.mark.parametrize(
    "row",
    [
        {"account_id": "a1", "amount": 1.1, "date": "2024-01-02"},
        {"account_id": "a1", "amount": "one", "date": "2024-01-02"},
        {"account_id": "a1", "amount": "NaN", "date": "2024-01-02"},
        {"account_id": "a1", "amount": "1", "date": "02/01/2024"},
    ],
    ids=["float", "not-a-number", "nan", "bad-date"],
)
def test_import_rows_are_checked_before_sending(router, client, row):
    route = router.post("/links/l1/import/transactions")
    with pytest.raises(pydantic.ValidationError):
        client.import_transactions("l1", [row])
    assert route.call_count == 0


# -- link data -----------------------------------------------------------------------------------


def test_get_account(router, client):
    route = router.get("/links/l1/accounts/acc%201").mock(
        return_value=httpx.Response(
            200, json={"account": account("acc 1"), "link": link_body("l1")}
        )
    )
    one = client.get_account("l1", "acc 1")
    assert one.account.account_id == "acc 1" and one.account.balances.available == 9.0
    assert route.call_count == 1


def test_get_account_numbers(router, client):
    numbers = {
        "ach": [{"account_number": "000123", "routing_number": "011000015"}],
        "eft": [],
        "bacs": [{"account_number": "1234", "sort_code": "12-34-56"}],
        "international": [{"iban": "GB00", "bic": "BIC", "extra": True}],
    }
    router.get("/links/l1/accounts/numbers").mock(
        return_value=httpx.Response(
            200, json={"accounts": [account(numbers=numbers)], "link": link_body("l1")}
        )
    )
    result = client.get_account_numbers("l1").accounts[0].numbers
    assert result.ach[0].routing_number == "011000015"
    assert result.bacs[0].sort_code == "12-34-56" and result.international[0].iban == "GB00"


def test_get_identities_query_and_owners(router, client):
    owner = {
        "names": ["Ada Lovelace"],
        "addresses": [{"city": "London", "primary": True}],
        "phone_numbers": [{"number": "+441234", "type": "mobile"}],
        "emails": [{"address": "ada@example.com"}],
    }
    route = router.get("/links/l1/identity").mock(
        return_value=httpx.Response(
            200, json={"accounts": [account(owners=[owner])], "link": link_body("l1")}
        )
    )
    result = client.get_identities("l1", account_ids=["a", "b"])
    assert query(route) == [("account_ids", "a"), ("account_ids", "b")]
    assert result.accounts[0].owners[0].phone_numbers[0].type == "mobile"
    client.get_identities("l1")
    assert query(route, 1) == []


def test_get_transactions_query(router, client):
    route = router.get("/links/l1/transactions").mock(
        return_value=httpx.Response(
            200,
            json={
                "total": 1,
                "page": 2,
                "size": 1,
                "transactions": [
                    txn(
                        datetime="2024-01-02T09:14:11",
                        enrichment={
                            "category": {"value": "shopping", "confidence": 0.9},
                            "merchant": {"name": "Shop"},
                        },
                    )
                ],
                "accounts": [account()],
                "link": link_body("l1"),
            },
        )
    )
    page = client.get_transactions(
        "l1",
        page=2,
        size=25,
        start_date=date(2024, 1, 1),
        end_date=datetime(2024, 1, 31, 12, 0, tzinfo=UTC),
        account_ids=["acc_1"],
    )
    assert sorted(query(route)) == [
        ("account_ids", "acc_1"),
        ("end_date", "2024-01-31"),
        ("page", "2"),
        ("size", "25"),
        ("start_date", "2024-01-01"),
    ]
    t = page.transactions[0]
    assert (t.amount, t.date, t.signed_amount) == ("12.30", date(2024, 1, 2), Decimal("-12.30"))
    assert t.datetime == datetime(2024, 1, 2, 9, 14, 11, tzinfo=UTC)
    assert t.enrichment is not None and t.enrichment.category is not None
    assert t.enrichment.category.value == "shopping"
    client.get_transactions("l1")
    assert query(route, 1) == []


def test_transaction_amount_must_be_a_string(router, client):
    router.get("/links/l1/transactions").mock(
        return_value=httpx.Response(
            200, json={"total": 1, "page": 1, "size": 1, "transactions": [txn(amount=12.3)]}
        )
    )
    with pytest.raises(APIResponseValidationError, match=r"transactions\.0\.amount"):
        client.get_transactions("l1")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.get_transactions("l1", page=0), "page"),
        (lambda c: c.get_transactions("l1", size=1001), "size"),
        (lambda c: c.get_investment_transactions("l1", size=0), "size"),
        (lambda c: c.get_user_transactions("u1", size=5000), "size"),
        (lambda c: c.sync_transactions("l1", size=501), "size"),
        (lambda c: c.get_identities("l1", account_ids="acc_1"), "sequence"),
    ],
)
def test_bad_arguments_are_refused_before_sending(client, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(client)


def sync_page(created: list[str], cursor: str | None, has_more: bool) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "transactions": {"created": [txn(t) for t in created], "updated": [], "removed": []},
            "accounts": [account()],
            "cursor": {"next": cursor},
            "has_more": has_more,
            "link": link_body("l1"),
        },
    )


def test_iter_transactions_sync_follows_next_while_has_more(router, client):
    route = router.get("/links/l1/transactions/sync").mock(
        side_effect=[
            sync_page(["t1", "t2"], "c1", True),
            sync_page(["t3"], "c2", True),
            sync_page([], "c3", False),
        ]
    )
    pages = list(client.iter_transactions_sync("l1", cursor="c0", size=2))
    assert [[t.transaction_id for t in p.transactions.created] for p in pages] == [
        ["t1", "t2"],
        ["t3"],
        [],
    ]
    assert pages[-1].next_cursor == "c3"
    assert [query(route, i) for i in range(3)] == [
        [("cursor", "c0"), ("size", "2")],
        [("cursor", "c1"), ("size", "2")],
        [("cursor", "c2"), ("size", "2")],
    ]


def test_sync_without_cursor_sends_none(router, client):
    route = router.get("/links/l1/transactions/sync").mock(
        return_value=sync_page(["t1"], "c1", False)
    )
    assert len(list(client.iter_transactions_sync("l1"))) == 1
    assert query(route) == [("size", "100")]


@pytest.mark.parametrize(
    "stuck",
    [
        [sync_page(["t1"], None, True)],
        [sync_page(["t1"], "c0", True)],
        [sync_page(["t1"], "c1", True), sync_page(["t2"], "c1", True)],
    ],
    ids=["missing-cursor", "same-cursor", "repeated-cursor"],
)
def test_iter_transactions_sync_refuses_a_cursor_that_does_not_advance(router, client, stuck):
    router.get("/links/l1/transactions/sync").mock(side_effect=stuck)
    with pytest.raises(APIResponseValidationError):
        list(client.iter_transactions_sync("l1", cursor="c0"))


def test_correct_enrichment_body(router, client):
    route = router.post("/links/l1/transactions/t%2F1/enrichment").mock(
        return_value=httpx.Response(
            200,
            json={
                "transactions": [txn("t/1", enrichment={"category": {"value": "shopping"}})],
                "accounts": [account()],
                "link": link_body("l1"),
                "cursor": {"next": "c9"},
            },
        )
    )
    result = client.correct_enrichment("l1", "t/1", "shopping", "hobbies")
    assert sent_json(route) == {"category": "shopping", "subcategory": "hobbies"}
    assert result.cursor is not None and result.cursor.next == "c9"
    client.correct_enrichment("l1", "t/1", "shopping")
    assert sent_json(route, 1) == {"category": "shopping"}


def test_get_holdings(router, client):
    route = router.get("/links/l1/investments/holdings").mock(
        return_value=httpx.Response(
            200,
            json={
                "holdings": [
                    {"account_id": "acc_1", "security_id": "s1", "quantity": "3", "value": "30.00"}
                ],
                "securities": [
                    {"security_id": "s1", "name": "Fund", "type": "fund", "currency": "USD"}
                ],
                "accounts": [account()],
                "link": link_body("l1"),
            },
        )
    )
    result = client.get_holdings("l1", account_ids=["acc_1"])
    assert query(route) == [("account_ids", "acc_1")]
    assert result.holdings[0].value == "30.00" and result.securities[0].type == "fund"


def test_get_investment_transactions_query(router, client):
    route = router.get("/links/l1/investments/transactions").mock(
        return_value=httpx.Response(
            200,
            json={
                "total": 1,
                "page": 1,
                "size": 1,
                "investment_transactions": [
                    {
                        "investment_transaction_id": "it1",
                        "account_id": "acc_1",
                        "amount": "100.00",
                        "date": "2024-01-05",
                        "description": "Buy",
                        "type": "buy.buy_to_cover",
                        "security_id": "s1",
                    }
                ],
                "securities": [],
                "accounts": [],
                "link": link_body("l1"),
            },
        )
    )
    page = client.get_investment_transactions("l1", page=1, size=3, start_date=date(2024, 1, 1))
    assert sorted(query(route)) == [("page", "1"), ("size", "3"), ("start_date", "2024-01-01")]
    assert page.investment_transactions[0].type == "buy.buy_to_cover"


# -- users ---------------------------------------------------------------------------------------


def test_user_endpoints(router, client):
    links = router.get("/users/cust%2F1/links").mock(
        return_value=httpx.Response(200, json={"links": {"l1": link_body("l1")}})
    )
    accounts = router.get("/users/cust%2F1/accounts").mock(
        return_value=httpx.Response(200, json={"links": {"l1": [account()]}})
    )
    txns = router.get("/users/cust%2F1/transactions").mock(
        return_value=httpx.Response(
            200,
            json={"total": 1, "page": 1, "size": 1, "transactions": [txn()], "accounts": []},
        )
    )
    assert client.get_user_links("cust/1").links["l1"].link_id == "l1"
    assert client.get_user_accounts("cust/1", ["acc_1"]).links["l1"][0].account_id == "acc_1"
    assert query(accounts) == [("account_ids", "acc_1")]
    page = client.get_user_transactions("cust/1", size=10, account_ids=["acc_1", "acc_2"])
    assert page.total == 1
    # This endpoint names its filter in the singular.
    assert query(txns) == [("size", "10"), ("account_id", "acc_1"), ("account_id", "acc_2")]
    assert links.call_count == 1


# -- webhooks ------------------------------------------------------------------------------------


def test_trigger_test_webhook_body(router, client):
    route = router.post("/webhooks/test/link/l1").mock(
        return_value=httpx.Response(200, json={"delivery_token": "dt_1"})
    )
    result = client.trigger_test_webhook(
        "l1", webhook_event="link.state_changed", idempotency_key="idem-1"
    )
    assert result.delivery_token == "dt_1"
    assert sent_json(route) == {
        "webhook_event": "link.state_changed",
        "webhook_idempotency_key": "idem-1",
    }


def test_create_link_session_sends_custom_sandbox_data(router, client):
    route = router.post("/link-session").mock(
        return_value=httpx.Response(201, json={"link_session_token": "lst"})
    )
    data = {"accounts": [{"account_type": "depository.checking", "name": "C"}]}
    client.create_link_session(
        customer_user_id="cust_1", redirect_uri="http://r.test", custom_sandbox_data=data
    )
    assert sent_json(route)["custom_sandbox_data"] == data


# -- errors on the new endpoints -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "raises"),
    [
        (410, {"error_code": "link_error.deleted"}, GoneError),
        (403, {"error_code": "link_error.forbidden_action"}, PermissionDeniedError),
        (
            422,
            {"error_code": "link_error.bad_state", "link_error_code": "auth_expired"},
            LinkBadStateError,
        ),
    ],
)
def test_link_errors_are_typed(router, client, status, body, raises):
    router.get("/links/l1/identity").mock(return_value=httpx.Response(status, json=body))
    with pytest.raises(raises) as info:
        client.get_identities("l1")
    assert info.value.error_code == body["error_code"]
    if raises is LinkBadStateError:
        assert info.value.link_error_code == "auth_expired"


# -- which calls may be repeated -------------------------------------------------------------------

Call = Callable[[MoneyKitClient], object]
IMPORT_ROW = {"account_id": "a1", "amount": "-1.00", "date": "2024-01-02"}

# Creating calls: a repeat after MoneyKit may have acted would create a second thing.
CREATING: list[tuple[str, str, Call, httpx.Response]] = [
    (
        "POST",
        "/links/import",
        lambda c: c.import_link(
            customer_user_id="cust_1",
            institution_id="moneykit-creds-bank",
            accounts=[{"account_id": "a1", "name": "C", "type": "checking"}],
        ),
        httpx.Response(200, json=link_body("l1")),
    ),
    (
        "POST",
        "/links/l1/import/transactions",
        lambda c: c.import_transactions("l1", [IMPORT_ROW]),
        httpx.Response(200, json=link_body("l1")),
    ),
    (
        "POST",
        "/link-session",
        lambda c: c.create_link_session(customer_user_id="cust_1", redirect_uri="http://r.test"),
        httpx.Response(201, json={"link_session_token": "lst"}),
    ),
    (
        "POST",
        "/link-session/exchange-token",
        lambda c: c.exchange_token("ext_1"),
        httpx.Response(201, json={"link": link_body("l1")}),
    ),
    (
        "POST",
        "/webhooks/test/link/l1",
        lambda c: c.trigger_test_webhook(
            "l1", webhook_event="link.state_changed", idempotency_key="k"
        ),
        httpx.Response(200, json={"delivery_token": "d"}),
    ),
]

# Reads and idempotent writes: repeating them is harmless.
REPEATABLE: list[tuple[str, str, Call, httpx.Response]] = [
    (
        "GET",
        "/links/l1/transactions/sync",
        lambda c: c.sync_transactions("l1"),
        sync_page([], "c1", False),
    ),
    (
        "PATCH",
        "/links/l1",
        lambda c: c.update_link("l1", webhook=None),
        httpx.Response(200, json=link_body("l1")),
    ),
    ("DELETE", "/links/l1", lambda c: c.delete_link("l1"), httpx.Response(204)),
    (
        "GET",
        "/users/u1/links",
        lambda c: c.get_user_links("u1"),
        httpx.Response(200, json={"links": {}}),
    ),
    (
        "GET",
        "/auth/introspect",
        lambda c: c.introspect(),
        httpx.Response(200, json={"client_id": "cid"}),
    ),
]


def _ids(table: list[tuple[str, str, Call, httpx.Response]]) -> list[str]:
    return [f"{method} {path}" for method, path, _, _ in table]


@pytest.mark.parametrize(
    ("failure", "raises"),
    [
        (httpx.Response(502), InternalServerError),
        (httpx.Response(500), InternalServerError),
        (httpx.ReadError("reset"), APIConnectionError),
        (httpx.ReadTimeout("slow"), APITimeoutError),
    ],
    ids=["502", "500", "read-error", "read-timeout"],
)
@pytest.mark.parametrize(("method", "path", "call", "success"), CREATING, ids=_ids(CREATING))
def test_creating_calls_are_not_repeated_once_they_may_have_arrived(
    router, client, sleeps, method, path, call, success, failure, raises
):
    route = router.route(method=method, path=path).mock(side_effect=[failure, success])
    with pytest.raises(raises):
        call(client)
    assert route.call_count == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow"),
    ],
    ids=["429", "connect-error", "connect-timeout"],
)
@pytest.mark.parametrize(("method", "path", "call", "success"), CREATING, ids=_ids(CREATING))
def test_creating_calls_are_repeated_when_the_server_cannot_have_acted(
    router, client, sleeps, method, path, call, success, failure
):
    route = router.route(method=method, path=path).mock(side_effect=[failure, success])
    call(client)
    assert route.call_count == 2
    assert len(sleeps) == 1
    assert route.calls[0].request.content == route.calls[1].request.content


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(502), httpx.Response(503), httpx.ReadError("reset")],
    ids=["502", "503", "read-error"],
)
@pytest.mark.parametrize(("method", "path", "call", "success"), REPEATABLE, ids=_ids(REPEATABLE))
def test_idempotent_calls_are_repeated_after_server_errors(
    router, client, sleeps, method, path, call, success, failure
):
    route = router.route(method=method, path=path).mock(side_effect=[failure, success])
    call(client)
    assert route.call_count == 2
    assert len(sleeps) == 1


def test_creating_call_gives_up_on_persistent_rate_limit(router, client, sleeps):
    route = router.post("/links/import").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "3"})
    )
    with pytest.raises(RateLimitError) as info:
        client.import_link(
            customer_user_id="cust_1",
            institution_id="moneykit-creds-bank",
            accounts=[{"account_id": "a1", "name": "C", "type": "checking"}],
        )
    assert route.call_count == 3 and sleeps == [3.0, 3.0]
    assert info.value.retry_after == 3.0
