"""Sign-in through the dashboard: throttled across sessions, and pages a role may not open."""

from __future__ import annotations

import json

import pytest

from linkdesk.auth import Actor, Role, hash_password
from tests.app.conftest import dashboard
from ui.auth import ACTOR_KEY, STAFF_SESSION_KEY
from ui.wiring import get_services


def _sign_in(username: str, password: str):
    app = dashboard(role=None).run()
    app.text_input[0].set_value(username)
    app.text_input[1].set_value(password)
    app.button[0].click().run()
    assert not app.exception
    return app


def test_thirty_guesses_in_six_fresh_sessions_lock_the_account_for_everyone(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = {"nora": {"role": "support", "password_hash": hash_password("nora-right-pw")}}
    monkeypatch.setenv("LINKDESK_USERS", json.dumps(users))
    get_services.clear()
    for _browser in range(6):  # a fresh session each: nothing kept in the browser helps
        for guess in range(5):
            app = _sign_in("nora", f"wrong-{guess}")
            assert ACTOR_KEY not in app.session_state
    app = _sign_in("nora", "nora-right-pw")
    assert ACTOR_KEY not in app.session_state
    (error,) = [e.value for e in app.error]
    assert error.startswith("Too many failed sign-ins") and "Try again at" in error


def test_a_right_password_opens_a_server_side_session(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = {"olga": {"role": "admin", "password_hash": hash_password("olga-right-pw")}}
    monkeypatch.setenv("LINKDESK_USERS", json.dumps(users))
    get_services.clear()
    app = _sign_in("olga", "olga-right-pw")
    assert app.session_state[ACTOR_KEY] == Actor("olga", Role.ADMIN)
    session_id = app.session_state[STAFF_SESSION_KEY]
    staff = get_services().staff
    assert staff.actor_for_session(session_id) == Actor("olga", Role.ADMIN)
    # Revoked elsewhere (another tab signed out, or an admin): this one is out on its next run.
    assert staff.revoke(Actor("root", Role.ADMIN), session_id)
    app.run()
    assert ACTOR_KEY not in app.session_state
    assert [title.value for title in app.title] == ["Sign in to Linkdesk"]


@pytest.mark.parametrize(
    ("page", "title", "needs"),
    [
        ("connect", "Connect a bank", "support or admin role"),
        ("webhooks", "Webhooks", "admin role"),
        ("demo", "Demo", "role"),
    ],
)
def test_a_viewer_opening_a_page_by_url_is_told_which_role_it_needs(
    app_env: str, page: str, title: str, needs: str
) -> None:
    app = dashboard(role=Role.VIEWER, page=page).run()
    assert not app.exception
    assert [t.value for t in app.title] == [title]
    (warning,) = [w.value for w in app.warning]
    assert needs in warning and "signed in as viewer" in warning
