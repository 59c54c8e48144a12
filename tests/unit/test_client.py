"""MoneyKitClient against respx: auth token cache, retries, error mapping, pagination.

Most behaviour is checked as tables; the HTTP side is faked at the transport, never by patching
the client's own methods.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from linkdesk.moneykit import (
    API_VERSION,
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GoneError,
    InternalServerError,
    LinkBadStateError,
    MoneyKitClient,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    parse_retry_after,
)
from linkdesk.moneykit.client import INITIAL_RETRY_DELAY, MAX_RETRY_DELAY
from linkdesk.moneykit.images import ImagePolicy, ImageRefused

BASE = "https://mk.test"
SECRET = "s3cr3t-value-never-shown"
ACCESS_TOKEN = "at_very_secret_token"
NOW = 1_700_000_000.0


class Clock:
    def __init__(self, start: float = NOW) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def link_body(link_id: str = "mk_link_1", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "link_id": link_id,
        "institution_id": "moneykit-creds-bank",
        "institution_name": "Credentials Bank",
        "institution_avatar": "https://example.test/a.svg",
        "state": "connected",
        "provider": "moneykit",
        "products": {},
        "available_products": ["accounts"],
    }
    body.update(extra)
    return body


def token_response(expires_in: int = 3600, token: str = ACCESS_TOKEN) -> httpx.Response:
    return httpx.Response(
        201, json={"access_token": token, "token_type": "bearer", "expires_in": expires_in}
    )


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(sleeps: list[float], clock: Clock) -> Iterator[MoneyKitClient]:
    c = MoneyKitClient(
        client_id="cid",
        client_secret=SECRET,
        base_url=BASE,
        max_retries=2,
        clock=clock,
        sleep=sleeps.append,
    )
    c._random = lambda: 0.5  # jitter pinned to the middle of its range: factor 0.875
    yield c
    c.close()


# -- token -------------------------------------------------------------------------------------


def test_token_is_fetched_once_and_sent_with_version_header(router, client):
    token_route = router.post("/auth/token").mock(return_value=token_response())
    link_route = router.get("/links/mk_link_1").mock(
        return_value=httpx.Response(200, json=link_body())
    )

    client.get_link("mk_link_1")
    client.get_link("mk_link_1")

    assert token_route.call_count == 1
    form = dict(httpx.QueryParams(token_route.calls[0].request.content.decode()))
    assert form == {"grant_type": "client_credentials", "client_id": "cid", "client_secret": SECRET}
    sent = link_route.calls[1].request.headers
    assert sent["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert sent["moneykit-version"] == API_VERSION == "2023-02-18"


@pytest.mark.parametrize(
    ("expires_in", "elapsed", "token_fetches"),
    [
        (3600, 0, 1),
        (3600, 3539, 1),  # refreshed 60 s before expiry, not earlier
        (3600, 3541, 2),
        (3600, 7200, 2),
        (60, 53, 1),  # short tokens keep a tenth of their life as margin
        (60, 55, 2),
    ],
)
def test_token_refreshed_shortly_before_expiry(
    router, client, clock, expires_in, elapsed, token_fetches
):
    token_route = router.post("/auth/token").mock(return_value=token_response(expires_in))
    router.get("/links/mk_link_1").mock(return_value=httpx.Response(200, json=link_body()))

    client.get_link("mk_link_1")
    clock.now += elapsed
    client.get_link("mk_link_1")

    assert token_route.call_count == token_fetches


@pytest.mark.parametrize(
    ("link_statuses", "expected_link_calls", "expected_token_calls", "raises"),
    [
        ([401, 200], 2, 2, None),
        ([401, 401], 2, 2, AuthenticationError),  # refreshed and retried exactly once
        ([200], 1, 1, None),
    ],
)
def test_401_refreshes_the_token_and_retries_exactly_once(
    router, client, sleeps, link_statuses, expected_link_calls, expected_token_calls, raises
):
    token_route = router.post("/auth/token").mock(
        side_effect=[token_response(token="first"), token_response(token="second")]
    )
    responses = [
        httpx.Response(s, json=link_body())
        if s == 200
        else httpx.Response(
            s, json={"error_code": "api_error.auth.expired_access_token", "error_message": "x"}
        )
        for s in link_statuses
    ]
    link_route = router.get("/links/mk_link_1").mock(side_effect=responses)

    if raises:
        with pytest.raises(raises):
            client.get_link("mk_link_1")
    else:
        client.get_link("mk_link_1")

    assert link_route.call_count == expected_link_calls
    assert token_route.call_count == expected_token_calls
    if expected_link_calls == 2:
        assert link_route.calls[1].request.headers["authorization"] == "Bearer second"
    assert sleeps == []  # a token refresh is not a backoff


def test_bad_credentials_raise_authentication_error_without_retry(router, client):
    route = router.post("/auth/token").mock(
        return_value=httpx.Response(
            401, json={"error_code": "api_error.auth.unauthorized", "error_message": "Bad"}
        )
    )
    with pytest.raises(AuthenticationError) as info:
        client.get_link("x")
    assert route.call_count == 1
    assert info.value.status_code == 401


# -- retries -----------------------------------------------------------------------------------


def _http_date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


def error(status: int, code: str = "api_error.test", headers: dict[str, str] | None = None):
    return httpx.Response(
        status, json={"error_code": code, "error_message": "m"}, headers=headers or {}
    )


def ok() -> httpx.Response:
    return httpx.Response(200, json=link_body())


# jitter is pinned to a factor of 0.875, so backoff n is 0.5 * 2**n * 0.875
B0, B1 = INITIAL_RETRY_DELAY * 0.875, INITIAL_RETRY_DELAY * 2 * 0.875

RETRY_TABLE = [
    pytest.param([error(429, headers={"Retry-After": "3"}), ok()], [3.0], None, id="429-seconds"),
    pytest.param(
        [error(429, headers={"Retry-After": "2.5"}), ok()], [2.5], None, id="429-float-seconds"
    ),
    pytest.param(
        [error(429, headers={"Retry-After": _http_date(5)}), ok()], [5.0], None, id="429-http-date"
    ),
    pytest.param([error(429, headers={"retry-after-ms": "1500"}), ok()], [1.5], None, id="429-ms"),
    pytest.param(
        [error(429, headers={"Retry-After": "600"}), ok()], [B0], None, id="429-too-long-ignored"
    ),
    pytest.param(
        [error(429, headers={"Retry-After": "0"}), ok()], [B0], None, id="429-zero-ignored"
    ),
    pytest.param(
        [error(429, headers={"Retry-After": _http_date(-30)}), ok()], [B0], None, id="429-past-date"
    ),
    pytest.param([error(503), error(502), ok()], [B0, B1], None, id="5xx-backoff-then-success"),
    pytest.param([error(408), ok()], [B0], None, id="408"),
    pytest.param([error(409), ok()], [B0], None, id="409"),
    pytest.param(
        [error(500), error(500), error(500)], [B0, B1], InternalServerError, id="5xx-exhausted"
    ),
    pytest.param(
        [error(429), error(429), error(429, headers={"Retry-After": "7"})],
        [B0, B1],
        RateLimitError,
        id="429-exhausted",
    ),
    pytest.param([error(400)], [], BadRequestError, id="400-not-retried"),
    pytest.param([error(403)], [], PermissionDeniedError, id="403-not-retried"),
    pytest.param([error(404)], [], NotFoundError, id="404-not-retried"),
    pytest.param([error(410)], [], GoneError, id="410-not-retried"),
    pytest.param([error(422)], [], UnprocessableEntityError, id="422-not-retried"),
    pytest.param(
        [error(503, headers={"x-should-retry": "false"})],
        [],
        InternalServerError,
        id="server-says-do-not-retry",
    ),
    pytest.param(
        [error(400, headers={"x-should-retry": "true"}), ok()],
        [B0],
        None,
        id="server-says-retry",
    ),
]


@pytest.mark.parametrize(("responses", "expected_sleeps", "raises"), RETRY_TABLE)
def test_retry_table(router, client, sleeps, responses, expected_sleeps, raises):
    router.post("/auth/token").mock(return_value=token_response())
    route = router.get("/links/mk_link_1").mock(side_effect=responses)

    if raises is None:
        assert client.get_link("mk_link_1").link_id == "mk_link_1"
    else:
        with pytest.raises(raises):
            client.get_link("mk_link_1")

    assert sleeps == pytest.approx(expected_sleeps)
    assert route.call_count == len(expected_sleeps) + 1


def test_rate_limit_error_carries_retry_after(router, client):
    client.max_retries = 0
    router.post("/auth/token").mock(return_value=token_response())
    router.get("/links").mock(
        return_value=error(429, "api_error.rate_limit_exceeded", {"Retry-After": "12"})
    )
    with pytest.raises(RateLimitError) as info:
        client.list_links()
    assert info.value.retry_after == 12.0
    assert info.value.error_code == "api_error.rate_limit_exceeded"


def test_link_bad_state_carries_link_error_code(router, client):
    router.post("/auth/token").mock(return_value=token_response())
    router.get("/links/l1/accounts").mock(
        return_value=httpx.Response(
            422,
            json={
                "error_code": "link_error.bad_state",
                "error_message": "Link needs relink",
                "link_error_code": "auth_expired",
            },
            headers={"x-request-id": "req_42"},
        )
    )
    with pytest.raises(LinkBadStateError) as info:
        client.get_accounts("l1")
    assert info.value.link_error_code == "auth_expired"
    assert info.value.request_id == "req_42"
    assert isinstance(info.value, UnprocessableEntityError)
    assert "req_42" in str(info.value) and "link_error.bad_state" in str(info.value)


@pytest.mark.parametrize("retries", [0, 1, 2, 5, 40, 1000])
def test_backoff_is_capped(client, retries):
    delay = client._retry_delay(retries, None)
    assert 0 < delay <= MAX_RETRY_DELAY


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "10"}, 10.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"Retry-After": "soon"}, None),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "x", "Retry-After": "4"}, 4.0),
        ({"Retry-After": email.utils.formatdate(NOW + 20, usegmt=True)}, 20.0),
        ({"Retry-After": email.utils.formatdate(NOW - 20, usegmt=True)}, -20.0),
    ],
)
def test_parse_retry_after(headers, expected):
    assert parse_retry_after(headers, now=NOW) == expected


# -- transport failures and bad responses --------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "raises"),
    [
        (httpx.ConnectError("refused"), APIConnectionError),
        (httpx.ReadError("reset"), APIConnectionError),
        (httpx.ReadTimeout("slow"), APITimeoutError),
        (httpx.ConnectTimeout("slow"), APITimeoutError),
    ],
)
def test_transport_errors_are_retried_then_typed(router, client, sleeps, exc, raises):
    router.post("/auth/token").mock(return_value=token_response())
    route = router.get("/links/l1").mock(side_effect=exc)
    with pytest.raises(raises) as info:
        client.get_link("l1")
    assert route.call_count == 3
    assert sleeps == pytest.approx([B0, B1])
    assert isinstance(info.value.__cause__, httpx.TransportError)


def test_connection_error_then_success(router, client, sleeps):
    router.post("/auth/token").mock(return_value=token_response())
    router.get("/links/l1").mock(side_effect=[httpx.ConnectError("refused"), ok()])
    assert client.get_link("l1").link_id == "mk_link_1"
    assert sleeps == pytest.approx([B0])


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"<html>not json</html>"),
        httpx.Response(200, content=b'{"link_id": '),
        httpx.Response(200, json={"link_id": "x"}),  # required fields missing
        httpx.Response(200, json=["not", "an", "object"]),
    ],
)
def test_malformed_responses_raise_validation_error(router, client, response):
    router.post("/auth/token").mock(return_value=token_response())
    router.get("/links/l1").mock(return_value=response)
    with pytest.raises(APIResponseValidationError):
        client.get_link("l1")


def test_exchange_is_not_retried_after_it_may_have_reached_the_server(router, client, sleeps):
    router.post("/auth/token").mock(return_value=token_response())
    route = router.post("/link-session/exchange-token").mock(
        side_effect=[error(502), httpx.Response(201, json={"link": link_body()})]
    )
    with pytest.raises(InternalServerError):
        client.exchange_token("ext_1")
    assert route.call_count == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "first",
    [error(429, headers={"Retry-After": "1"}), httpx.ConnectError("refused")],
    ids=["rate-limited", "never-connected"],
)
def test_exchange_is_retried_when_the_server_cannot_have_acted(router, client, first):
    router.post("/auth/token").mock(return_value=token_response())
    route = router.post("/link-session/exchange-token").mock(
        side_effect=[first, httpx.Response(201, json={"link_id": "l9", "link": link_body("l9")})]
    )
    result = client.exchange_token("ext_1")
    assert result.link.link_id == "l9"
    assert route.call_count == 2
    assert json.loads(route.calls[0].request.content) == {"exchangeable_token": "ext_1"}


# -- secrets never leak --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 429, 500])
def test_error_text_never_contains_body_secret_or_token(router, client, status):
    client.max_retries = 0
    router.post("/auth/token").mock(return_value=token_response())
    leaky_body = {
        "error_code": "api_error.x",
        "error_message": "short message",
        "echo": {"client_secret": SECRET, "access_token": ACCESS_TOKEN, "ext": "ext_tok_123"},
    }
    router.get("/links/l1").mock(
        side_effect=[
            httpx.Response(status, json=leaky_body),
            httpx.Response(status, json=leaky_body),
        ]
    )
    with pytest.raises(APIStatusError) as info:
        client.get_link("l1")
    texts = [str(info.value), repr(info.value), info.value.user_message, str(info.value.args)]
    for text in texts:
        assert SECRET not in text
        assert ACCESS_TOKEN not in text
        assert "ext_tok_123" not in text
    assert str(status) in str(info.value)


def test_validation_error_names_fields_not_values(router, client):
    router.post("/auth/token").mock(return_value=token_response())
    router.post("/link-session").mock(
        return_value=httpx.Response(201, json={"link_session_token": 12345, "note": SECRET})
    )
    with pytest.raises(APIResponseValidationError) as info:
        client.create_link_session(customer_user_id="cust_0001", redirect_uri="https://x/y")
    assert "link_session_token" in str(info.value)
    assert "12345" not in str(info.value) and SECRET not in str(info.value)


def test_client_repr_hides_secret_and_token(router, client):
    router.post("/auth/token").mock(return_value=token_response())
    router.get("/links/l1").mock(return_value=ok())
    client.get_link("l1")
    assert SECRET not in repr(client) and ACCESS_TOKEN not in repr(client)


def test_logs_never_contain_secrets(router, client, caplog):
    caplog.set_level("DEBUG", logger="linkdesk")
    router.post("/auth/token").mock(return_value=token_response())
    router.post("/link-session/exchange-token").mock(
        return_value=httpx.Response(201, json={"link": link_body()})
    )
    client.exchange_token("ext_secret_token")
    assert caplog.records  # debug logging is on and did log
    assert all(s not in caplog.text for s in (SECRET, ACCESS_TOKEN, "ext_secret_token"))


# -- endpoints -----------------------------------------------------------------------------------


def test_iter_links_advances_the_cursor_and_stops_on_null(router, client):
    router.post("/auth/token").mock(return_value=token_response())
    pages = {
        None: {"links": [{"link_id": "a"}, {"link_id": "b"}], "next_cursor": "c1"},
        "c1": {"links": [{"link_id": "c"}], "next_cursor": "c2"},
        "c2": {
            "links": [{"link_id": "d", "created_at": "2024-01-01T00:00:00"}],
            "next_cursor": None,
        },
    }

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    route = router.get("/links").mock(side_effect=respond)
    assert [item.link_id for item in client.iter_links()] == ["a", "b", "c", "d"]
    assert [c.request.url.params.get("cursor") for c in route.calls] == [None, "c1", "c2"]
    assert all(c.request.url.params["limit"] == "500" for c in route.calls)


@pytest.mark.parametrize(
    "last_page",
    [
        {"links": [{"link_id": "b"}], "next_cursor": ""},
        {"links": [{"link_id": "b"}]},
        {"links": [], "next_cursor": "c9"},  # empty page ends the walk whatever the cursor
    ],
)
def test_iter_links_stops_on_empty_cursor_or_page(router, client, last_page):
    router.post("/auth/token").mock(return_value=token_response())
    route = router.get("/links").mock(
        side_effect=[
            httpx.Response(200, json={"links": [{"link_id": "a"}], "next_cursor": "c1"}),
            httpx.Response(200, json=last_page),
        ]
    )
    ids = [item.link_id for item in client.iter_links()]
    assert ids == ["a", *[x["link_id"] for x in last_page["links"]]]
    assert route.call_count == 2


def test_iter_links_refuses_a_cursor_that_does_not_advance(router, client):
    router.post("/auth/token").mock(return_value=token_response())
    router.get("/links").mock(
        return_value=httpx.Response(200, json={"links": [{"link_id": "a"}], "next_cursor": "same"})
    )
    with pytest.raises(APIResponseValidationError):
        list(client.iter_links())


@pytest.mark.parametrize("limit", [499, 5001])
def test_list_links_limit_bounds(client, limit):
    with pytest.raises(ValueError):
        client.list_links(limit=limit)


def test_list_institutions_reads_plural_cursors(router, client):
    router.post("/auth/token").mock(return_value=token_response())
    route = router.get("/institutions").mock(
        return_value=httpx.Response(
            200,
            json={
                "institutions": [
                    {
                        "institution_id": "i1",
                        "name": "One",
                        "country": "US",
                        "institution_id_aliases": [],
                        "is_featured": True,
                        "logo": "https://x/l.svg",
                        "color_dark": "#000000",
                    }
                ],
                "cursors": {"next": "n2"},
            },
        )
    )
    page = client.list_institutions(name="On", featured=True, limit=10)
    assert page.next_cursor == "n2"
    assert page.institutions[0].logo == "https://x/l.svg"
    params = route.calls[0].request.url.params
    assert params["name"] == "On" and params["featured"] == "true" and params["limit"] == "10"


def test_create_link_session_body(router, client):
    router.post("/auth/token").mock(return_value=token_response())
    route = router.post("/link-session").mock(
        return_value=httpx.Response(201, json={"link_session_token": "lst_1"})
    )
    session = client.create_link_session(
        customer_user_id="cust_0001",
        redirect_uri="http://localhost:8501/oauth_return",
        existing_link_id="mk_1",
        webhook="https://hooks.example/mk",
        link_tags=["customer:cust_0001", "source:linkdesk"],
    )
    assert session.link_session_token == "lst_1"
    assert "lst_1" not in repr(session)
    assert json.loads(route.calls[0].request.content) == {
        "customer_user": {"id": "cust_0001"},
        "redirect_uri": "http://localhost:8501/oauth_return",
        "existing_link_id": "mk_1",
        "webhook": "https://hooks.example/mk",
        "link_tags": ["customer:cust_0001", "source:linkdesk"],
    }


def test_path_parameters_are_percent_encoded(router, client):
    router.post("/auth/token").mock(return_value=token_response())
    route = router.get(url__regex=r".*/links/a%2Fb%3F$").mock(return_value=ok())
    client.get_link("a/b?")
    assert route.call_count == 1


# -- images --------------------------------------------------------------------------------------


# A made-up CDN name that "resolves" to a public address; respx answers, nothing is sent.
CDN_ADDRESS = "93.184.215.14"


@pytest.fixture()
def cdn_client(client):
    client.image_policy = ImagePolicy.from_hosts(
        ["https://cdn.test"], resolver=lambda host, port: [CDN_ADDRESS]
    )
    return client


def test_fetch_image_sends_no_credentials_to_the_checked_address(router, cdn_client):
    route = router.get(f"https://{CDN_ADDRESS}/logo.svg").mock(
        return_value=httpx.Response(
            200, content=b"<svg/>", headers={"content-type": "image/svg+xml; charset=utf-8"}
        )
    )
    assert cdn_client.fetch_image("https://cdn.test/logo.svg") == ("image/svg+xml", b"<svg/>")
    request = route.calls[0].request
    assert "authorization" not in request.headers
    assert request.headers["host"] == "cdn.test"
    assert request.extensions["sni_hostname"] == "cdn.test"  # the certificate is for the name


@pytest.mark.parametrize("declare_length", [True, False])
def test_fetch_image_is_bounded(router, cdn_client, declare_length):
    body = b"x" * 2000
    headers = {"content-type": "image/png"}

    def respond(request: httpx.Request) -> httpx.Response:
        if declare_length:
            return httpx.Response(200, content=body, headers=headers)

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(body), 100):
                yield body[i : i + 100]

        return httpx.Response(200, content=chunks(), headers=headers)

    router.get(f"https://{CDN_ADDRESS}/big.png").mock(side_effect=respond)
    with pytest.raises(ImageRefused):
        cdn_client.fetch_image("https://cdn.test/big.png", max_bytes=1000)
    assert cdn_client.fetch_image("https://cdn.test/big.png", max_bytes=2000)[1] == body


@pytest.mark.parametrize("url", ["javascript:alert(1)", "file:///etc/passwd", "data:image/png,x"])
def test_fetch_image_refuses_other_schemes(client, url):
    with pytest.raises(ValueError):
        client.fetch_image(url)


# -- construction --------------------------------------------------------------------------------


def test_constructor_refuses_bad_arguments():
    with pytest.raises(TypeError):
        MoneyKitClient(client_id="a", client_secret="b", max_retries=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        MoneyKitClient(client_id="a", client_secret="b", http_client=object())  # type: ignore[arg-type]


def test_credentials_fall_back_to_environment_only_when_not_passed(monkeypatch):
    monkeypatch.setenv("MONEYKIT_CLIENT_ID", "env_id")
    monkeypatch.setenv("MONEYKIT_CLIENT_SECRET", "env_secret")
    monkeypatch.setenv("MONEYKIT_BASE_URL", "https://env.test/")
    from_env = MoneyKitClient()
    passed = MoneyKitClient(client_id="arg_id", client_secret="arg", base_url="https://arg.test")
    assert (from_env.client_id, from_env.base_url) == ("env_id", "https://env.test")
    assert (passed.client_id, passed.base_url) == ("arg_id", "https://arg.test")
    monkeypatch.delenv("MONEYKIT_CLIENT_ID")
    with pytest.raises(ValueError):
        MoneyKitClient(client_secret="x")


def test_injected_http_client_is_not_closed(router):
    http = httpx.Client()
    with MoneyKitClient(client_id="a", client_secret="b", base_url=BASE, http_client=http):
        pass
    assert not http.is_closed
    http.close()


def test_conflict_is_its_own_class(router, client):
    client.max_retries = 0
    router.post("/auth/token").mock(return_value=token_response())
    router.get("/links/l1").mock(return_value=error(409))
    with pytest.raises(ConflictError):
        client.get_link("l1")
