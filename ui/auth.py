"""Who is using the dashboard: local sign-in, or OIDC through `st.login` when configured.

Local users come from the store (`python -m linkdesk user add`), from `.streamlit/secrets.toml`
(`[linkdesk.users.<name>]` tables with `role` and `password_hash`) and from the `LINKDESK_USERS`
setting. A local sign-in is checked and throttled by the core (`linkdesk.services.staff_auth`),
which opens a server-side session; the browser then visits `/auth/session` once, a route of
`server.py` that sets the HttpOnly session cookie and sends it on to the page it asked for. Every
run reads that cookie (`st.context.cookies`) and checks the session in the store, so reloads and
new tabs stay signed in, and a sign-out or an admin's revocation signs every tab out on its next
run.

With an `[auth]` section in the secrets, staff sign in with the company's identity provider
instead and get their role from `[linkdesk.roles]` (email → role) or from a claim mapped in
`[linkdesk.oidc]` (`role_claim`, `role_map`); anyone not mapped is a viewer. The role decides
which pages exist for the person; the services check it again before they act.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import streamlit as st

from linkdesk.auth import Actor, Role, load_users
from linkdesk.services.staff_auth import SESSION_COOKIE, client_address
from ui.navigate import go_to
from ui.wiring import get_services

ACTOR_KEY = "linkdesk.actor"
STAFF_SESSION_KEY = "linkdesk.staff_session"


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
    """Accounts from the settings and the secrets file (the store's are added by the core)."""
    configured = get_services().settings.users
    users = load_users(configured.get_secret_value() if configured else None)
    users.update(load_users(_to_plain(_secrets_section("linkdesk").get("users", {}))))
    return users


def _to_plain(value: Any) -> Any:
    """st.secrets hands out read-only mapping proxies; the core wants plain dicts."""
    if isinstance(value, Mapping):
        return {str(key): _to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(item) for item in value]
    return value


def oidc_role(claims: Mapping[str, Any], config: Mapping[str, Any]) -> Role:
    """The role of an OIDC user: `[linkdesk.roles]` by email, then `[linkdesk.oidc]`'s claim
    mapping (`role_claim` names a claim holding a value or a list, e.g. groups; `role_map`
    maps those values to roles; the highest role wins). Anyone else is a viewer."""
    by_email = config.get("roles", {})
    email = str(claims.get("email") or "")
    if isinstance(by_email, Mapping) and email in by_email:
        try:
            return Role(str(by_email[email]))
        except ValueError:
            return Role.VIEWER
    oidc = config.get("oidc", {})
    if not isinstance(oidc, Mapping):
        return Role.VIEWER
    claim = claims.get(str(oidc.get("role_claim", "groups")))
    role_map = oidc.get("role_map", {})
    values = claim if isinstance(claim, list | tuple) else [claim] if claim else []
    order = [Role.VIEWER, Role.SUPPORT, Role.ADMIN]
    best = Role.VIEWER
    for value in values:
        mapped = role_map.get(str(value)) if isinstance(role_map, Mapping) else None
        if mapped in {r.value for r in Role} and order.index(Role(mapped)) > order.index(best):
            best = Role(mapped)
    return best


def current_actor() -> Actor | None:
    if oidc_configured():
        if not st.user.is_logged_in:
            return None
        claims = _to_plain(dict(st.user.to_dict()))
        email = str(claims.get("email") or "")
        name = str(claims.get("name") or email or "signed-in user")
        return Actor(name, oidc_role(claims, _to_plain(_secrets_section("linkdesk"))))
    session_id = st.session_state.get(STAFF_SESSION_KEY)
    token = st.context.cookies.get(SESSION_COOKIE)
    if not isinstance(session_id, str) and not (isinstance(token, str) and token):
        # An actor put in this session's state by the code itself (tests draw pages this
        # way); a browser cannot write session state.
        actor = st.session_state.get(ACTOR_KEY)
        return actor if isinstance(actor, Actor) else None
    staff = get_services().staff
    if isinstance(session_id, str):
        # Checked on every run: a sign-out in another tab or an admin's revocation ends it here.
        actor = staff.actor_for_session(session_id)
        if actor is None:
            st.session_state.pop(STAFF_SESSION_KEY, None)
            st.session_state.pop(ACTOR_KEY, None)
        else:
            st.session_state[ACTOR_KEY] = actor
        return actor
    found = staff.actor_for_token(token if isinstance(token, str) else None)
    if found is None:
        st.session_state.pop(ACTOR_KEY, None)
        return None
    actor, session_id = found
    st.session_state[STAFF_SESSION_KEY] = session_id
    st.session_state[ACTOR_KEY] = actor
    return actor


def require_actor() -> Actor:
    """The signed-in staff member; pages behind the sign-in gate can rely on it."""
    actor = current_actor()
    if actor is None:
        st.warning("Please sign in again.")
        st.stop()
    return actor


def _connection_ip() -> str | None:
    ip = st.context.ip_address  # None on localhost (and outside a browser)
    return ip if isinstance(ip, str) else None


def _request_headers() -> dict[str, str]:
    try:
        headers = dict(st.context.headers)
    except TypeError:  # no browser connection (AppTest)
        return {}
    return {str(k): v for k, v in headers.items() if isinstance(v, str)}


def _requested_url() -> str:
    """The path and query the person asked for, so sign-in ends where they wanted to go."""
    url = st.context.url
    path = (urlsplit(url).path if isinstance(url, str) else "") or "/"
    query = st.query_params.to_dict()
    return path + (f"?{urlencode(query)}" if query else "")


def sign_in_page() -> None:
    st.title("Sign in to Linkdesk")
    if oidc_configured():
        st.button("Sign in with your company account", type="primary", on_click=st.login)
        return
    services = get_services()
    users = local_users()
    if not users and not services.staff.stored_users():
        st.error(
            "No staff users are configured. Add one with `python -m linkdesk user add NAME "
            "--role admin`, or add `[linkdesk.users.<name>]` entries to "
            "`.streamlit/secrets.toml` (see the README)."
        )
        return
    with st.form("sign-in"):
        username = st.text_input("Username", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    client = client_address(
        _connection_ip(),
        _request_headers(),
        trust_forwarded_for=services.settings.trust_forwarded_for,
    )
    result = services.staff.sign_in(username, password, client=client, configured_users=users)
    if result.actor is None:
        st.error(result.message)
        return
    st.session_state[STAFF_SESSION_KEY] = result.session_id
    st.session_state[ACTOR_KEY] = result.actor
    # The cookie that keeps this browser signed in is set by server.py's /auth/session route;
    # this tab is already signed in through its session state if the browser stays here.
    target = "/auth/session?" + urlencode({"code": result.handoff_code, "next": _requested_url()})
    st.info("Signed in. Opening Linkdesk…")
    go_to(target)


def sign_out_page() -> None:
    session_id = st.session_state.pop(STAFF_SESSION_KEY, None)
    st.session_state.pop(ACTOR_KEY, None)
    if oidc_configured():
        st.logout()
        return
    if isinstance(session_id, str):
        get_services().staff.sign_out(session_id=session_id)
    # Clears the cookie too, so the next visit asks for a password again.
    go_to("/auth/sign-out")
    st.info("Signed out.")


def role_notice_page(title: str, needs: str) -> Any:
    """A page standing in for one the person's role may not open (reached by URL)."""

    def notice() -> None:
        actor = require_actor()
        st.title(title)
        st.warning(
            f"{title} needs the {needs} role; you are signed in as "
            f"{actor.role.value}. Ask an admin if you need it."
        )
        st.page_link("app_pages/overview.py", label="Go to the Overview", icon="📊")

    return notice
