"""Every page when things are missing or broken: an empty store, a database that is locked or
down, MoneyKit unreachable or failing. Each gets a designed message, never a traceback.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from linkdesk.auth import Role
from tests.app.conftest import as_shown, dashboard
from tests.conftest import PostgresDatabases
from ui.wiring import get_services

STAFF_PAGES = (
    "overview",
    "links",
    "customer",
    "funnel",
    "activity",
    "webhooks",
    "alerts",
    "connect",
)
TITLES = {
    "overview": "Overview",
    "links": "Links",
    "customer": "Customer timeline",
    "funnel": "Connect funnel",
    "activity": "Activity",
    "webhooks": "Webhooks",
    "alerts": "Alerts",
    "connect": "Connect a bank",
}


def closed_port() -> int:
    """A port nothing listens on (bound for a moment, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def open_page(page: str, **query_params: str) -> AppTest:
    # Admins see every page (the webhooks page is theirs alone).
    return dashboard(role=Role.ADMIN, page=page, **query_params).run()


def shown_text(app: AppTest) -> str:
    parts = [
        getattr(element, "value", "")
        for kind in ("info", "success", "warning", "error", "caption", "markdown")
        for element in app.get(kind)
    ]
    return as_shown(" ".join(str(part) for part in parts))


def errors(app: AppTest) -> list[str]:
    return [str(element.value) for element in app.error]


@pytest.fixture()
def empty_store(app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_services.clear()


EMPTY_MESSAGES = {
    "overview": "No links in the store yet",
    "links": "No links in the store yet",
    "customer": "No customer matches",
    "funnel": "No Connect session in this period",
    "activity": "No audit entry matches these filters",
    "webhooks": "No webhook delivery yet",
    "connect": "Opens MoneyKit Connect for a customer",
    "alerts": "No alert has fired yet",
}


@pytest.mark.parametrize("page", STAFF_PAGES)
def test_an_empty_store_gets_an_explanation_on_every_page(empty_store: None, page: str) -> None:
    app = open_page(page)
    assert not app.exception
    assert [title.value for title in app.title] == [TITLES[page]]
    assert EMPTY_MESSAGES[page] in shown_text(app)
    assert not errors(app)
    if page == "connect":  # no customer to pick yet: only a new one
        assert app.selectbox(key="connect.customer_choice").options == ["➕ New customer…"]


@pytest.fixture()
def database_down(app_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A PostgreSQL URL on a port nothing listens on: connecting is refused at once.
    monkeypatch.setenv(
        "DATABASE_URL", f"postgresql+psycopg://linkdesk@127.0.0.1:{closed_port()}/linkdesk"
    )
    get_services.clear()


@pytest.mark.parametrize("page", STAFF_PAGES)
def test_a_database_that_is_down_gets_a_designed_panel_on_every_page(
    database_down: None, page: str
) -> None:
    app = open_page(page)
    assert not app.exception
    assert errors(app) == ["**The Linkdesk database cannot be reached**"]
    text = shown_text(app)
    assert "What to do:" in text
    assert "Reference " in text  # the log line to look for
    assert "127.0.0.1" not in text and "psycopg" not in text  # no connection details
    assert "Try again" in [button.label for button in app.button]


def test_a_locked_database_says_so_and_try_again_recovers(
    app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "locked.db"
    shutil.copyfile(app_env.removeprefix("sqlite:///"), copy)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{copy}")
    get_services.clear()
    # Another process holding the only lock, as a long write or a stuck copy of Linkdesk would.
    holder = sqlite3.connect(copy, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        app = dashboard().run()  # waits for the store's busy timeout first
        assert not app.exception
        assert errors(app) == ["**The Linkdesk database is busy**"]
        assert "SELECT" not in shown_text(app)  # no SQL on the screen
    finally:
        holder.close()
    next(button for button in app.button if button.label == "Try again").click().run()
    assert not app.exception
    assert not errors(app)
    assert any(metric.label == "🔴 Needs relink" for metric in app.metric)


@pytest.fixture()
def own_store(app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the seeded store: a failed start is recorded, and the shared store stays as is."""
    copy = tmp_path / "own.db"
    shutil.copyfile(app_env.removeprefix("sqlite:///"), copy)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{copy}")
    get_services.clear()


@pytest.mark.parametrize("page", ["overview", "links"])
def test_a_database_lost_while_the_page_is_open_gets_one_panel(
    app_env: str,
    fresh_postgres_url: str,
    postgres_databases: PostgresDatabases,
    monkeypatch: pytest.MonkeyPatch,
    page: str,
) -> None:
    """The services are built and the page drawn; then the database goes away. Whichever part
    notices first (on the Overview the live panel, a fragment that reruns on its own), the page
    says it once."""
    monkeypatch.setenv("DATABASE_URL", fresh_postgres_url)
    get_services.clear()
    app = dashboard(page=page).run()
    assert not app.exception
    assert "No links in the store yet" in shown_text(app)
    postgres_databases.drop(fresh_postgres_url)  # forcibly, with the dashboard's connections
    app.run()
    assert not app.exception
    assert errors(app) == ["**The Linkdesk database cannot be reached**"]  # once, not per query
    get_services.clear()  # its pool points at a database that no longer exists


def test_connect_with_moneykit_unreachable_explains_what_to_do(own_store: None) -> None:
    # app_env points MoneyKit at a closed port.
    app = open_page("connect")
    app.text_input(key="connect.new_customer").set_value("cust_unreachable").run()
    next(b for b in app.button if b.label == "Open MoneyKit Connect").click().run()
    assert not app.exception
    assert errors(app) == ["**MoneyKit cannot be reached**"]
    assert "MoneyKit's status page" in shown_text(app)


class _Unavailable(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = b'{"error_code": "api_error", "error_message": "Service unavailable"}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def moneykit_failing(own_store: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("MONEYKIT_BASE_URL", url)
    monkeypatch.setenv("MONEYKIT_MAX_RETRIES", "0")
    get_services.clear()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_connect_with_moneykit_failing_says_it_is_moneykits_trouble(
    moneykit_failing: None,
) -> None:
    app = open_page("connect")
    app.text_input(key="connect.new_customer").set_value("cust_failing").run()
    next(b for b in app.button if b.label == "Open MoneyKit Connect").click().run()
    assert not app.exception
    assert errors(app) == ["**MoneyKit is having trouble**"]
