"""The worker panel says when the last listing of links was ignored as suspect."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from linkdesk.services.discovery import DISCOVERY_SUSPECT
from linkdesk.store import Store, create_engine
from linkdesk.store.repository import put_named_state
from tests.app.conftest import dashboard


@pytest.fixture
def suspect_listing(app_env: str) -> Iterator[str]:
    store = Store(create_engine(app_env))
    value = {"at": datetime.now(UTC).isoformat(), "listed": 0, "known": 120, "missing": 120}
    with store.write() as session:
        put_named_state(session, DISCOVERY_SUSPECT, value, datetime.now(UTC))
    yield app_env
    with store.write() as session:
        put_named_state(session, DISCOVERY_SUSPECT, {}, datetime.now(UTC))
    store.dispose()


def test_a_suspect_listing_is_shown_on_the_worker_panel(suspect_listing: str) -> None:
    app = dashboard(page="links").run()
    assert not app.exception
    assert any("lacked 120 of 120 known links" in w.value for w in app.warning)


def test_a_complete_listing_shows_no_warning(app_env: str) -> None:
    app = dashboard(page="links").run()
    assert not app.exception
    assert not any("known links" in w.value for w in app.warning)
