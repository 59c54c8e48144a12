"""Who is using the dashboard: local sign-in, or OIDC through `st.login` when configured.

Local users come from `.streamlit/secrets.toml` (`[linkdesk.users.<name>]` tables with `role` and
`password_sha256`) and from the `LINKDESK_USERS` setting; with an `[auth]` section in the secrets,
staff sign in with the company's identity provider instead and get their role from
`[linkdesk.roles]` (email → role, `viewer` by default). The role decides which pages exist for the
person; the services check it again before they act.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from linkdesk.auth import Actor, Role, load_users, verify_local_password
from ui.wiring import get_services

ACTOR_KEY = "linkdesk.actor"
FAILED_ATTEMPTS_KEY = "linkdesk.failed_sign_ins"
MAX_FAILED_ATTEMPTS = 5


def _secrets_section(name: str) -> Mapping[str, Any]:
    try:
        section = st.secrets.get(name, {})
    except FileNotFoundError:
        return {}
    except Exception:  # a malformed secrets.toml must not lock everyone out with a traceback
        return {}
    return section if isinstance(section, Mapping) else {}


def oidc_configured() -> bool:
    return bool(_secrets_section("auth"))


def local_users() -> dict[str, dict[str, str]]:
    configured = get_services().settings.users
    users = load_users(configured.get_secret_value() if configured else None)
    users.update(load_users(_to_plain(_secrets_section("linkdesk").get("users", {}))))
    return users


def _to_plain(value: Any) -> Any:
    """st.secrets hands out read-only mapping proxies; the core wants plain dicts."""
    if isinstance(value, Mapping):
        return {str(key): _to_plain(item) for key, item in value.items()}
    return value


def current_actor() -> Actor | None:
    if oidc_configured():
        if not st.user.is_logged_in:
            return None
        email = str(st.user.get("email") or "")
        roles = _secrets_section("linkdesk").get("roles", {})
        role = roles.get(email, Role.VIEWER.value) if isinstance(roles, Mapping) else "viewer"
        name = str(st.user.get("name") or email or "signed-in user")
        try:
            return Actor(name, Role(role))
        except ValueError:
            return Actor(name, Role.VIEWER)
    actor = st.session_state.get(ACTOR_KEY)
    return actor if isinstance(actor, Actor) else None


def require_actor() -> Actor:
    """The signed-in staff member; pages behind the sign-in gate can rely on it."""
    actor = current_actor()
    if actor is None:
        st.warning("Please sign in again.")
        st.stop()
    return actor


def sign_in_page() -> None:
    st.title("Sign in to Linkdesk")
    if oidc_configured():
        st.button("Sign in with your company account", type="primary", on_click=st.login)
        return
    users = local_users()
    if not users:
        st.error(
            "No staff users are configured. Add `[linkdesk.users.<name>]` entries to "
            "`.streamlit/secrets.toml` or set `LINKDESK_USERS` (see the README)."
        )
        return
    failures = int(st.session_state.get(FAILED_ATTEMPTS_KEY, 0))
    if failures >= MAX_FAILED_ATTEMPTS:
        st.error("Too many failed sign-ins in this session. Reload the page to try again.")
        return
    with st.form("sign-in"):
        username = st.text_input("Username", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        actor = verify_local_password(users, username.strip(), password)
        if actor is None:
            st.session_state[FAILED_ATTEMPTS_KEY] = failures + 1
            st.error("Unknown user or wrong password.")
        else:
            st.session_state.pop(FAILED_ATTEMPTS_KEY, None)
            st.session_state[ACTOR_KEY] = actor
            st.rerun()


def sign_out_page() -> None:
    st.session_state.pop(ACTOR_KEY, None)
    if oidc_configured():
        st.logout()
    st.rerun()
