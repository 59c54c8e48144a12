"""AppTest fixtures: a store filled the way production fills it, through discovery.

The sandbox app runs in-process (Starlette's TestClient is an httpx.Client), Linkdesk discovers
its demo links through the real MoneyKit client, and the pages are then pointed at that store
through the same environment variables production uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest

from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import build_services
from linkdesk.settings import Settings
from linkdesk.store.engine import Store, create_engine
from linkdesk.store.health_totals import forget_stored_summary
from linkdesk.store.shared import wait_for_refreshes
from sandbox.app import create_app
from ui.auth import ACTOR_KEY
from ui.wiring import get_services

ROOT = Path(__file__).resolve().parents[2]
CLIENT_ID = "apptest_client"
CLIENT_SECRET = "apptest_secret"  # credentials of an in-process sandbox
SANDBOX_URL = "http://testserver"


@pytest.fixture(scope="session")
def seeded_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('app') / 'linkdesk.db'}"
    sandbox = create_app(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, demo_links=120, public_url=SANDBOX_URL
    )
    with TestClient(sandbox, base_url=SANDBOX_URL) as http_client:
        settings = Settings(
            moneykit_base_url=SANDBOX_URL,
            moneykit_connect_host=SANDBOX_URL,
            moneykit_client_id=CLIENT_ID,
            moneykit_client_secret=SecretStr(CLIENT_SECRET),
            database_url=database_url,
        )
        services = build_services(settings, http_client=http_client)
        report = services.discovery.sync_all()
        services.close()
    assert report.failed == 0 and report.ok == 120
    return database_url


@pytest.fixture()
def app_env(seeded_database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DATABASE_URL", seeded_database)
    monkeypatch.setenv("LINKDESK_SIGNING_KEY", "apptest-signing-key-" + "x" * 32)
    # Pages read the store only; MoneyKit must not be needed to draw them.
    monkeypatch.setenv("MONEYKIT_BASE_URL", "http://localhost:9")
    monkeypatch.setenv("MONEYKIT_CONNECT_HOST", "http://localhost:9")
    monkeypatch.setenv("LINKDESK_STAFF_USER", "apptest-agent")
    # Each test starts like a new deployment: its own services and no counts remembered from
    # the previous test, which may have changed links a moment ago (the pages may show a count
    # up to half a minute old, and the tests compare them with the store).
    get_services.clear()
    forget_summary_of(seeded_database)
    yield seeded_database
    get_services.clear()


def forget_summary_of(database_url: str) -> None:
    wait_for_refreshes()
    store = Store(create_engine(database_url))
    forget_stored_summary(store)
    store.dispose()


def dashboard(
    *, role: Role | None = Role.SUPPORT, page: str | None = None, **query_params: str
) -> AppTest:
    """The dashboard, signed in with ``role`` (or signed out when ``role`` is None).

    ``page`` opens a page by its URL path, as a shared link would (``"links"`` for
    ``/links?...``); without it the first run draws the landing page, the Overview.
    """
    app = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    if role is not None:
        app.session_state[ACTOR_KEY] = Actor(f"apptest-{role.value}", role)
    for name, value in query_params.items():
        app.query_params[name] = value
    if page is not None:
        # Before the first run AppTest names a page by its file name, which is also each
        # page's url_path here, so this is the page a browser opening /<page> gets.
        app.switch_page(f"app_pages/{page}.py")
    return app


def as_shown(markdown: str) -> str:
    """What a person reads for Markdown text: outside values are escaped character by character
    (``ui.render.plain``), so compare what is shown, not the escapes."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u200b", "")
