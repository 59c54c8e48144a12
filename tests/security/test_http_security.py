"""The security-header middleware on its own (the running process is checked in
tests/e2e/test_security_headers.py): headers on every response, closed paths, websockets
untouched."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from linkdesk.http_security import SecurityHeadersMiddleware, content_security_policy

CONNECT = "https://connect.moneykit.example"


async def page(request: object) -> PlainTextResponse:
    # A response that tries to set its own, weaker framing rule.
    return PlainTextResponse("page", headers={"X-Frame-Options": "ALLOWALL"})


async def metrics(request: object) -> PlainTextResponse:
    return PlainTextResponse("sessions 3")


async def socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


@pytest.fixture()
def client() -> TestClient:
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/_stcore/metrics", metrics),
            Route("/base/_stcore/metrics", metrics),
            WebSocketRoute("/_stcore/stream", socket),
        ],
        middleware=[Middleware(SecurityHeadersMiddleware, connect_host=CONNECT)],
    )
    return TestClient(app)


def test_every_response_gets_the_headers_and_they_win(client: TestClient) -> None:
    for path in ("/", "/missing"):
        response = client.get(path)
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers.get_list("x-frame-options") == ["DENY"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "path",
    [
        "/_stcore/metrics",
        "/_stcore/metrics/",
        "/_stcore/metrics?format=protobuf",
        "//_stcore//metrics",
        "/base/_stcore/metrics",
    ],
)
def test_streamlit_metrics_are_closed(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "sessions" not in response.text
    assert response.headers["x-frame-options"] == "DENY"


def test_the_websocket_passes_through(client: TestClient) -> None:
    with client.websocket_connect("/_stcore/stream") as websocket:
        assert websocket.receive_text() == "hello"


def test_the_policy_allows_connect_and_nothing_else_from_outside() -> None:
    policy = dict(
        part.strip().split(" ", 1) for part in content_security_policy(CONNECT).split(";")
    )
    assert policy["frame-src"] == f"'self' {CONNECT}"
    assert policy["connect-src"] == f"'self' {CONNECT}"
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"


@pytest.mark.parametrize("host", ["", "javascript:alert(1)", "not a url", "ftp://x"])
def test_a_malformed_connect_host_adds_no_source(host: str) -> None:
    policy = content_security_policy(host)
    assert "frame-src 'self';" in policy and "javascript" not in policy
