"""Fixtures for fast, in-process tests of the sandbox (Starlette TestClient, no port, no thread).

Time is pinned with :class:`FakeClock` so token and session expiry are tested without sleeping,
and demo data is comparable across app instances.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x nudges towards `httpx2`; the project pins httpx, which TestClient still uses.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from sandbox.app import create_app

CLIENT_ID = "test_client"
CLIENT_SECRET = "test_secret"
PUBLIC_URL = "http://localhost:8611"
START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def credentials() -> tuple[str, str]:
    """The client id and secret the in-process sandbox accepts."""
    return CLIENT_ID, CLIENT_SECRET


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_app(clock: FakeClock) -> Callable[..., Starlette]:
    def build(**overrides: Any) -> Starlette:
        options: dict[str, Any] = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "seed": 42,
            "demo_links": 300,
            "public_url": PUBLIC_URL,
            "clock": clock,
        }
        options.update(overrides)
        return create_app(**options)

    return build


@pytest.fixture
def app(make_app: Callable[..., Starlette]) -> Starlette:
    return make_app()


@pytest.fixture
def client(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, base_url=PUBLIC_URL) as test_client:
        yield test_client


def issue_token(client: TestClient) -> str:
    response = client.post(
        "/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["access_token"]
    return token


@pytest.fixture
def auth(client: TestClient) -> dict[str, str]:
    """Authorization headers with a fresh bearer token."""
    return {"Authorization": f"Bearer {issue_token(client)}"}


@pytest.fixture
def api(client: TestClient, auth: dict[str, str]) -> TestClient:
    """The test client with a valid bearer token on every request."""
    client.headers.update(auth)
    return client


def assert_moneykit_error(response: httpx.Response, status: int, error_code: str) -> dict[str, Any]:
    """MoneyKit's error envelope: ``{error_code, error_message}`` plus optional extras."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error_code"] == error_code
    assert isinstance(body["error_message"], str) and body["error_message"]
    return body


@pytest.fixture
def moneykit_error() -> Callable[[httpx.Response, int, str], dict[str, Any]]:
    return assert_moneykit_error


@pytest.fixture
def new_session(api: TestClient) -> Callable[..., str]:
    """Create a link session and return its token."""

    def create(**fields: Any) -> str:
        body = {
            "customer_user": {"id": "cust_9001"},
            "redirect_uri": "http://localhost:8501/oauth_return",
        }
        body.update(fields)
        response = api.post("/link-session", json=body)
        assert response.status_code == 201, response.text
        token: str = response.json()["link_session_token"]
        return token

    return create


class ConnectDriver:
    """Plays the hosted Connect page: the same /connect-api calls its script makes."""

    def __init__(self, client: TestClient, token: str, mode: str = "start") -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.mode = mode

    def session(self) -> httpx.Response:
        return self.client.get(
            "/connect-api/session", params={"mode": self.mode}, headers=self.headers
        )

    def login(
        self, institution_id: str, username: str | None = None, password: str | None = None
    ) -> httpx.Response:
        body: dict[str, Any] = {"institution_id": institution_id}
        if username is not None:
            body.update(username=username, password=password)
        return self.client.post(
            "/connect-api/institution", params={"mode": self.mode}, json=body, headers=self.headers
        )

    def complete(self, account_ids: list[str]) -> httpx.Response:
        return self.client.post(
            "/connect-api/complete",
            params={"mode": self.mode},
            json={"account_ids": account_ids},
            headers=self.headers,
        )

    def link_all(self, institution_id: str = "moneykit-creds-bank") -> dict[str, Any]:
        """Log in with the good credentials, keep every account, return the completion."""
        login = self.login(institution_id, "user_good", "pass_good")
        assert login.status_code == 200, login.text
        ids = [a["account_id"] for a in login.json()["accounts"]]
        done = self.complete(ids)
        assert done.status_code == 200, done.text
        completion: dict[str, Any] = done.json()["completion"]
        return completion


@pytest.fixture
def connect(client: TestClient) -> Callable[..., ConnectDriver]:
    def driver(token: str, mode: str = "start") -> ConnectDriver:
        return ConnectDriver(client, token, mode)

    return driver


@dataclass
class Receiver:
    """A real HTTP server on localhost that records the webhooks the sandbox posts to it."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    # Status codes to answer, in order; 200 once they run out.
    script: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self.lock:
            pytest.fail(f"expected {count} webhook requests, got {len(self.received)}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with box.lock:
                box.received.append({"headers": dict(self.headers), "body": body})
                status = box.script.pop(0) if box.script else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield box
    server.shutdown()
    server.server_close()
