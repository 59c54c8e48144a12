"""Fixtures for integration tests: the real sandbox in its own process, and Linkdesk's webhook
receiver on a real HTTP port, so signed webhooks travel over real HTTP between them.

* ``sandbox`` (module): ``Sandbox(url, client_id, client_secret)`` of a ``python -m sandbox``
  started on a free port with a few demo links and an accelerated webhook retry schedule.
* ``services``: Linkdesk wired to that sandbox over a temporary SQLite file, with real clocks.
* ``receiver_url``: ``http://localhost:<port>/webhooks/moneykit`` served by uvicorn in a thread
  from ``services.webhooks``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette

from linkdesk.bootstrap import Services, build_services
from linkdesk.settings import Settings
from linkdesk.webhooks.asgi import webhook_route
from tests.sandbox_process import free_port, running_sandbox

CLIENT_ID = "integration_client"
CLIENT_SECRET = "integration_secret"


@dataclass(frozen=True)
class Sandbox:
    url: str

    def token(self) -> str:
        response = httpx.post(
            f"{self.url}/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
            timeout=10,
        )
        response.raise_for_status()
        token: str = response.json()["access_token"]
        return token

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]

    def control(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        response = httpx.request(method, f"{self.url}/_sandbox{path}", timeout=10, **kwargs)  # type: ignore[arg-type]
        response.raise_for_status()
        return response


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    try:
        with running_sandbox(
            CLIENT_ID, CLIENT_SECRET, "--demo-links", "6", "--webhook-time-scale", "3600"
        ) as url:
            yield Sandbox(url)
    except RuntimeError as failure:
        pytest.fail(str(failure))


class AheadClock:
    """The real time, plus whatever a test has moved it on by (instead of sleeping through it)."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead

    def advance(self, seconds: float) -> None:
        self.ahead += timedelta(seconds=seconds)


@pytest.fixture
def ahead_clock() -> AheadClock:
    return AheadClock()


@pytest.fixture
def services(sandbox: Sandbox, tmp_path: Path, ahead_clock: AheadClock) -> Iterator[Services]:
    sandbox.control("POST", "/reset")
    sandbox.control("DELETE", "/faults")
    settings = Settings(
        moneykit_base_url=sandbox.url,
        moneykit_connect_host=sandbox.url,
        moneykit_client_id=CLIENT_ID,
        moneykit_client_secret=SecretStr(CLIENT_SECRET),
        database_url=f"sqlite:///{tmp_path / 'linkdesk.db'}",
        signing_key_file=str(tmp_path / "signing.key"),
        webhook_issuer=sandbox.url,  # the sandbox signs with its own URL as issuer
        jwks_min_refetch_seconds=1,
        moneykit_max_retries=0,
    )
    built = build_services(settings, worker_id="integration", clock=ahead_clock)
    yield built
    built.close()


@contextmanager
def serving_receiver(services: Services, port: int | None = None) -> Iterator[str]:
    """Linkdesk's webhook route served by uvicorn in a thread; yields its URL."""
    app = Starlette(routes=[webhook_route(services.webhooks)])
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="localhost", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "webhook receiver did not start"
    try:
        yield f"http://localhost:{port}/webhooks/moneykit"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def receiver_url(services: Services) -> Iterator[str]:
    with serving_receiver(services) as url:
        yield url
