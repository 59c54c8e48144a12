"""The HTTP side of staff sessions: the two routes that set and clear the session cookie.

A Streamlit script cannot set cookies, so after a successful sign-in the page sends the browser
once to ``GET /auth/session?code=…&next=…``: the one-time code is exchanged for the session
token, which is set as an HttpOnly, SameSite=Lax cookie (Secure when the request came over
https), and the browser goes on to ``next`` (a path on this site only). ``GET /auth/sign-out``
ends the session of the cookie and clears it. Plain Starlette routes, mounted by ``server.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Route

from linkdesk.services.staff_auth import SESSION_COOKIE, StaffAuth

__all__ = ["SESSION_PATH", "SIGN_OUT_PATH", "safe_next", "staff_session_routes"]

SESSION_PATH = "/auth/session"
SIGN_OUT_PATH = "/auth/sign-out"
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this site, else ``/`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 0x20 for c in target):
        return "/"
    return target


def _is_https(request: Request, trust_forwarded_proto: bool) -> bool:
    if request.url.scheme == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "")
    return trust_forwarded_proto and forwarded.split(",")[0].strip().lower() == "https"


def staff_session_routes(
    staff: Callable[[], StaffAuth],
    *,
    trust_forwarded_proto: bool = False,
    clock: Callable[[], datetime] | None = None,
) -> list[Route]:
    now = clock or (lambda: datetime.now(UTC))

    async def start_session(request: Request) -> RedirectResponse:
        code = request.query_params.get("code", "")
        target = safe_next(request.query_params.get("next"))
        exchanged = await run_in_threadpool(staff().exchange_handoff, code)
        response = RedirectResponse(target, status_code=303, headers=_NO_STORE)
        if exchanged is not None:
            token, expires_at = exchanged
            response.set_cookie(
                SESSION_COOKIE,
                token,
                max_age=max(1, int((expires_at - now()).total_seconds())),
                path="/",
                httponly=True,
                secure=_is_https(request, trust_forwarded_proto),
                samesite="lax",
            )
        return response

    async def sign_out(request: Request) -> RedirectResponse:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await run_in_threadpool(lambda: staff().sign_out(token=token))
        response = RedirectResponse("/", status_code=303, headers=_NO_STORE)
        response.delete_cookie(
            SESSION_COOKIE,
            path="/",
            httponly=True,
            secure=_is_https(request, trust_forwarded_proto),
            samesite="lax",
        )
        return response

    return [
        Route(SESSION_PATH, start_session, methods=["GET"]),
        Route(SIGN_OUT_PATH, sign_out, methods=["GET"]),
    ]
