"""The routes that set and clear the staff session cookie (server.py mounts them)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.testclient import TestClient

from linkdesk.auth import Actor, Role
from linkdesk.bootstrap import Services
from linkdesk.services.staff_auth import SESSION_COOKIE
from linkdesk.staff_web import safe_next, staff_session_routes


def _client(services: Services, *, https: bool = False, trust: bool = False) -> TestClient:
    app = Starlette(
        routes=staff_session_routes(
            lambda: services.staff, trust_forwarded_proto=trust, clock=services.staff._clock
        )
    )
    base = "https://linkdesk.test" if https else "http://linkdesk.test"
    return TestClient(app, base_url=base, follow_redirects=False)


def test_the_code_sets_an_httponly_lax_cookie_once_and_sends_the_browser_on(
    core_services: Services,
):
    _, code = core_services.staff.open_session(Actor("pat", Role.SUPPORT), client="local")
    with _client(core_services) as http:
        answer = http.get("/auth/session", params={"code": code, "next": "/links?link=mk_1"})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/links?link=mk_1"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        lowered = cookie.lower()
        assert "httponly" in lowered and "samesite=lax" in lowered and "path=/" in lowered
        assert "secure" not in lowered  # plain http (local runs)
        max_age = int(lowered.split("max-age=")[1].split(";")[0])
        assert 43_100 < max_age <= 43_200  # LINKDESK_STAFF_SESSION_HOURS (12), less time taken
        token = answer.cookies[SESSION_COOKIE]
        assert core_services.staff.actor_for_token(token) is not None
        again = http.get("/auth/session", params={"code": code, "next": "/"})
        assert "set-cookie" not in again.headers


def test_the_cookie_is_secure_over_https(core_services: Services):
    _, code = core_services.staff.open_session(Actor("pat", Role.SUPPORT), client="local")
    with _client(core_services, https=True) as http:
        cookie = http.get("/auth/session", params={"code": code}).headers["set-cookie"]
    assert "secure" in cookie.lower()


def test_a_proxy_saying_https_counts_only_when_trusted(core_services: Services):
    staff = core_services.staff
    headers = {"X-Forwarded-Proto": "https"}
    _, code = staff.open_session(Actor("pat", Role.SUPPORT), client="local")
    with _client(core_services, trust=True) as http:
        cookie = http.get("/auth/session", params={"code": code}, headers=headers)
    assert "secure" in cookie.headers["set-cookie"].lower()
    _, code = staff.open_session(Actor("pat", Role.SUPPORT), client="local")
    with _client(core_services) as http:
        cookie = http.get("/auth/session", params={"code": code}, headers=headers)
    assert "secure" not in cookie.headers["set-cookie"].lower()


def test_sign_out_ends_the_session_and_clears_the_cookie(core_services: Services):
    _, code = core_services.staff.open_session(Actor("pat", Role.SUPPORT), client="local")
    with _client(core_services) as http:
        token = http.get("/auth/session", params={"code": code}).cookies[SESSION_COOKIE]
        http.cookies.set(SESSION_COOKIE, token)
        answer = http.get("/auth/sign-out")
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    assert 'linkdesk_session=""' in answer.headers["set-cookie"]
    assert core_services.staff.actor_for_token(token) is None


def test_only_paths_on_this_site_are_followed():
    assert safe_next("/links?link=mk_1") == "/links?link=mk_1"
    for hostile in ("https://evil.test/", "//evil.test/x", "/\\evil.test", "", None, "/a\r\nb"):
        assert safe_next(hostile) == "/"
