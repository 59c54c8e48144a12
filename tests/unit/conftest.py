"""Shared fixtures for the core's unit tests.

``FakeMoneyKit`` is a small in-memory MoneyKit behind ``httpx.MockTransport``: the real client
talks HTTP to it, so retries, parsing and errors are exercised for real, and tests assert on the
state it keeps (links, consumed tokens, request counts), not on mocked calls.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import httpx
import limits.storage.memory
import pytest
from pydantic import SecretStr

from linkdesk.bootstrap import Services, build_services
from linkdesk.settings import Settings
from linkdesk.store.engine import Store, create_engine, migrate

FAKE_BASE = "http://moneykit.test"
CLIENT_ID = "test_client_id"
CLIENT_SECRET = "test-client-secret-do-not-print"

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
    b'<rect width="8" height="8"/></svg>'
)


class FakeClock:
    """A settable UTC clock."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            # Every reading moves time on a little, so "later" is always strictly later.
            self.now += timedelta(milliseconds=1)
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)

    def seconds(self) -> float:
        """The time now as a POSIX timestamp, without moving it on (for background readers)."""
        with self._lock:
            return self.now.timestamp()


def rate_windows_follow(monkeypatch: pytest.MonkeyPatch, seconds: Callable[[], float]) -> None:
    """Make the ``limits`` library, which keeps the rate windows (services/ratelimit.py), read
    the test's clock: it reads ``time.time()`` through its memory storage's module."""
    monkeypatch.setattr(limits.storage.memory, "time", SimpleNamespace(time=seconds))


def link_json(
    link_id: str,
    *,
    institution_id: str = "bank-a",
    institution_name: str = "Bank A",
    state: str = "connected",
    error_code: str | None = None,
    tags: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "link_id": link_id,
        "institution_id": institution_id,
        "institution_name": institution_name,
        "institution_avatar": f"{FAKE_BASE}/assets/institutions/{institution_id}/avatar.svg",
        "state": state,
        "error_code": error_code,
        "provider": "moneykit",
        "link_tags": tags if tags is not None else [],
        "products": {
            "accounts": {"refreshed_at": "2025-01-01T10:00:00"},
            "transactions": {"has_history": True},
        },
        "available_products": ["accounts", "transactions"],
    }


def institution_json(institution_id: str, name: str, color: str = "#1a2b3c") -> dict[str, Any]:
    base = f"{FAKE_BASE}/assets/institutions/{institution_id}"
    return {
        "institution_id": institution_id,
        "institution_id_aliases": [],
        "name": name,
        "country": "US",
        "domain": f"{institution_id}.example",
        "color": color,
        "color_dark": "#FFFFFF",
        "is_featured": False,
        "logo": f"{base}/logo.svg",
        "logo_dark": f"{base}/logo_dark.svg",
        "avatar": f"{base}/avatar.svg",
        "avatar_dark": f"{base}/avatar_dark.svg",
    }


@dataclass
class FakeMoneyKit:
    """Enough of MoneyKit's REST API for the services, with state tests can inspect."""

    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    institutions: dict[str, dict[str, Any]] = field(default_factory=dict)
    exchangeable: dict[str, str] = field(default_factory=dict)  # token -> link id it creates
    consumed: set[str] = field(default_factory=set)
    failing_links: set[str] = field(default_factory=set)
    unreachable: bool = False
    page_size: int = 2
    exchange_delay: Callable[[], None] | None = None
    link_sessions: list[dict[str, Any]] = field(default_factory=list)
    refreshes: list[tuple[str, list[str]]] = field(default_factory=list)
    refresh_status: int = 202
    # link id -> (status, extra headers) answered instead of the link, e.g. (429, Retry-After)
    link_faults: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    signer: Any = None  # a WebhookSigner whose keys /.well-known/jwks.json publishes
    # Each entry answers one whole listing with only its first N links (0: empty), in one page:
    # an upstream bug or a proxy that blanks or truncates GET /links.
    truncated_listings: list[int] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_institution(self, institution_id: str, name: str, color: str = "#1a2b3c") -> None:
        self.institutions[institution_id] = institution_json(institution_id, name, color)

    def add_link(self, link_id: str, **kwargs: Any) -> dict[str, Any]:
        inst = kwargs.get("institution_id", "bank-a")
        if inst not in self.institutions:
            self.add_institution(inst, kwargs.get("institution_name", "Bank A"))
        self.links[link_id] = link_json(link_id, **kwargs)
        self.accounts[link_id] = [
            {
                "account_id": f"{link_id}-acc-1",
                "account_type": "depository.checking",
                "name": "Checking",
                "account_mask": "1234",
                "balances": {"currency": "USD", "current": 100.5, "available": 90.0},
            }
        ]
        return self.links[link_id]

    # -- transport -----------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def http_client(self) -> httpx.Client:
        return httpx.Client(transport=self.transport())

    @staticmethod
    def _error(status: int, code: str, message: str) -> httpx.Response:
        return httpx.Response(
            status,
            json={"error_code": code, "error_message": message},
            headers={"x-request-id": "req_fake"},
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        method = request.method
        with self._lock:
            self.calls[f"{method} {path}"] += 1
        if path == "/.well-known/jwks.json" and self.signer is not None:
            response: httpx.Response = self.signer.handle(request)
            return response
        if path.startswith("/assets/"):
            return httpx.Response(200, content=SVG, headers={"content-type": "image/svg+xml"})
        if method == "POST" and path == "/auth/token":
            return httpx.Response(201, json={"access_token": "tok_abc", "expires_in": 3600})
        if request.headers.get("authorization") != "Bearer tok_abc":
            return self._error(401, "api_error.auth.unauthorized", "Unauthorized")
        if method == "POST" and path == "/link-session":
            body = json.loads(request.content)
            with self._lock:
                self.link_sessions.append(body)
                token = f"lst_{len(self.link_sessions)}"
            return httpx.Response(201, json={"link_session_token": token})
        if method == "POST" and path == "/link-session/exchange-token":
            token = json.loads(request.content)["exchangeable_token"]
            if self.exchange_delay is not None:
                self.exchange_delay()
            with self._lock:
                if token in self.consumed or token not in self.exchangeable:
                    return self._error(400, "link_session_error.invalid_token_exchange", "Bad")
                self.consumed.add(token)
                link = self.links[self.exchangeable[token]]
            return httpx.Response(201, json={"link_id": link["link_id"], "link": link})
        if method == "GET" and path == "/links":
            # As MoneyKit: deleted links stay readable one by one but are no longer listed.
            ids = sorted(i for i, link in self.links.items() if link["state"] != "deleted")
            cursor = request.url.params.get("cursor")
            if cursor is None and self.truncated_listings:
                with self._lock:
                    keep = self.truncated_listings.pop(0)
                listed = [{"link_id": i, "created_at": "2024-06-01T00:00:00"} for i in ids[:keep]]
                return httpx.Response(200, json={"links": listed, "next_cursor": None})
            start = int(cursor) if cursor else 0
            page = ids[start : start + self.page_size]
            nxt = str(start + self.page_size) if start + self.page_size < len(ids) else None
            return httpx.Response(
                200,
                json={
                    "links": [{"link_id": i, "created_at": "2024-06-01T00:00:00"} for i in page],
                    "next_cursor": nxt,
                },
            )
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "links" and len(parts) >= 2:
            link_id = parts[1]
            if link_id in self.link_faults:
                status, headers = self.link_faults[link_id]
                return httpx.Response(
                    status,
                    json={"error_code": "api_error.rate_limit_exceeded", "error_message": "Slow"},
                    headers=headers,
                )
            if link_id in self.failing_links:
                return self._error(500, "api_error.internal", "Internal error")
            stored = self.links.get(link_id)
            if stored is None:
                return self._error(404, "link_error.not_found", "Link not found.")
            if method == "GET" and len(parts) == 2:
                return httpx.Response(200, json=stored)
            if method == "GET" and parts[2:] == ["accounts"]:
                return httpx.Response(
                    200, json={"accounts": self.accounts[link_id], "link": stored}
                )
            if method == "POST" and parts[2:] == ["products"]:
                if self.refresh_status != 202:
                    return self._error(self.refresh_status, "api_error.rate_limit_exceeded", "No")
                with self._lock:
                    self.refreshes.append((link_id, json.loads(request.content)["products"]))
                return httpx.Response(202, json=stored)
            if method == "POST" and parts[2:] == ["reset"]:
                stored.update(state="error", error_code="auth_expired")
                return httpx.Response(200, json=stored)
        if parts[0] == "institutions" and len(parts) == 2 and method == "GET":
            found = self.institutions.get(parts[1])
            if found is None:
                return self._error(404, "institution_error.not_found", "Institution not found")
            return httpx.Response(200, json=found)
        return self._error(404, "api_error.not_found", f"No route {method} {path}")


@pytest.fixture
def fake_moneykit() -> FakeMoneyKit:
    return FakeMoneyKit()


@pytest.fixture
def core_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The services' clock; the rate windows follow it too, so tests step time past a limit."""
    clock = FakeClock()
    rate_windows_follow(monkeypatch, clock.seconds)
    return clock


@pytest.fixture
def core_settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings of the fake MoneyKit, on each database backend in turn (see tests/conftest.py)."""
    return Settings(
        moneykit_base_url=FAKE_BASE,
        moneykit_client_id=CLIENT_ID,
        moneykit_client_secret=SecretStr(CLIENT_SECRET),
        database_url=database_url,
        redirect_uri="http://localhost:8501/oauth_return",
        webhook_url="https://linkdesk.example/webhooks/moneykit",
        sync_concurrency=1,
        # Never the installation's var/signing.key.
        signing_key_file=str(tmp_path / "signing.key"),
    )


@pytest.fixture
def store(database_backend: str, request: pytest.FixtureRequest) -> Iterator[Store]:
    """An empty, migrated store on each backend: in-memory SQLite, or the module's PostgreSQL."""
    url = "sqlite://" if database_backend == "sqlite" else request.getfixturevalue("database_url")
    engine = create_engine(url)
    migrate(engine)
    store = Store(engine)
    yield store
    store.dispose()


@pytest.fixture
def memory_store() -> Iterator[Store]:
    engine = create_engine("sqlite://")
    migrate(engine)
    store = Store(engine)
    yield store
    store.dispose()


@pytest.fixture
def file_store(tmp_path: Path) -> Iterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(engine)
    store = Store(engine)
    yield store
    store.dispose()


@pytest.fixture
def core_services(
    core_settings: Settings, fake_moneykit: FakeMoneyKit, core_clock: FakeClock
) -> Iterator[Services]:
    """Services over a temporary SQLite file and the fake MoneyKit, built by the real builder."""
    http = fake_moneykit.http_client()
    services = build_services(
        core_settings, http_client=http, clock=core_clock, sleep=lambda _s: None
    )
    yield services
    services.close()
    http.close()


# -- webhook signing ---------------------------------------------------------------------------


class WebhookSigner:
    """Plays MoneyKit's side of webhooks: ES256 keys, a JWKS endpoint, signed deliveries.

    ``jwks_transport()`` serves the published keys and counts fetches; ``rotate()`` publishes a
    new key (keeping the old one listed, as MoneyKit does for a while).
    """

    def __init__(self, issuer: str = FAKE_BASE) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.issuer = issuer
        self.keys: dict[str, Any] = {}
        self.kid = ""
        self.jwks_fetches = 0
        self.jwks_down = False
        self._ec = ec
        self.rotate()

    def rotate(self) -> str:
        self.kid = f"key-{len(self.keys) + 1}"
        self.keys[self.kid] = self._ec.generate_private_key(self._ec.SECP256R1())
        return self.kid

    def jwks(self) -> dict[str, Any]:
        import jwt

        published = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            published.append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
        return {"keys": published}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/jwks.json":
            self.jwks_fetches += 1
            if self.jwks_down:
                return httpx.Response(503, json={"error_code": "api_error.internal"})
            return httpx.Response(200, json=self.jwks())
        return httpx.Response(404)

    def http_client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle), base_url=FAKE_BASE)

    def signature(
        self,
        body: bytes,
        *,
        iat: datetime,
        kid: str | None = None,
        key: Any = None,
        claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        import hashlib

        import jwt

        payload = {
            "iss": self.issuer,
            "iat": int(iat.timestamp()),
            "request_body_sha256": hashlib.sha256(body).hexdigest(),
            **(claims or {}),
        }
        return jwt.encode(
            payload,
            key if key is not None else self.keys[kid or self.kid],
            algorithm="ES256",
            headers={"kid": kid or self.kid, **(headers or {})},
        )

    def delivery(
        self,
        *,
        link_id: str,
        iat: datetime,
        event: str = "link.state_changed",
        timestamp: datetime | None = None,
        key: str | None = None,
        token: str | None = None,
        attempt: int = 1,
        **fields: Any,
    ) -> tuple[bytes, dict[str, str]]:
        """(raw body, headers) of a signed delivery as MoneyKit would send it."""
        ts = timestamp or iat
        body = json.dumps(
            {
                "webhook_event": event,
                "webhook_major_version": 1,
                "webhook_minor_version": 0,
                "webhook_idempotency_key": key or f"idem-{link_id}-{ts.timestamp()}",
                "webhook_timestamp": ts.isoformat().replace("+00:00", "Z"),
                "link_id": link_id,
                "link_tags": [],
                **fields,
            }
        ).encode()
        headers = {
            "MoneyKit-Signature": self.signature(body, iat=iat),
            "MoneyKit-Delivery-Token": token or f"dt-{key or link_id}-{ts.timestamp()}",
            "MoneyKit-Delivery-Attempt": str(attempt),
            "Content-Type": "application/json",
        }
        return body, headers


@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner()
