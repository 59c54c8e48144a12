"""The hosted Connect UI: the pages the launcher frames, and the JSON endpoints those pages call.

``/start``, ``/relink`` and ``/continue`` all serve one static page; its script reads the path and
the launcher's query string and speaks the postMessage protocol (protocol doc §2.6-§2.11). The page
talks back to the sandbox only through ``/connect-api/*`` on this origin, authenticated by the link
session token as a bearer token, so nothing in the page needs the company's API credentials.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.api import backend, base_url
from sandbox.backends.connect import (
    OTP_DEVICES,
    ConnectResult,
    LoginOutcome,
    MfaRequired,
    OAuthRequired,
)
from sandbox.bank import default_bank_url
from sandbox.errors import ConnectError
from sandbox.institutions import Institution
from sandbox.models import Account, LinkSession
from sandbox.schemas import (
    ConnectCompleteIn,
    ConnectInstitutionIn,
    ConnectMfaIn,
    ConnectOAuthFinishIn,
    ConnectOtpDeviceIn,
    ConnectPermissionsIn,
)
from sandbox.state import SandboxState
from sandbox.views import connect_account_json, connect_institution_json

# Framing is allowed for any local origin: the dashboard runs on a port chosen at start-up.
FRAME_ANCESTORS = (
    "'self' http://localhost:* https://localhost:* http://127.0.0.1:* https://127.0.0.1:*"
)
UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    f"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors {FRAME_ANCESTORS}"
)
UI_HEADERS = {
    "Content-Security-Policy": UI_CSP,
    # The page URL carries the link session token; never leak it through Referer.
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_ASSET_TYPES = {
    "connect.js": "text/javascript; charset=utf-8",
    "connect.css": "text/css; charset=utf-8",
}
MODES = ("start", "relink", "continue")


def _read_ui_file(name: str) -> str:
    return resources.files("sandbox").joinpath("ui", name).read_text(encoding="utf-8")


def _session(
    request: Request, *, allow_completed: bool = False
) -> tuple[SandboxState, LinkSession]:
    state = backend(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    mode = request.query_params.get("mode", "start")
    if mode not in MODES:
        raise ConnectError(400, "invalid_request", "Unknown Connect mode.")
    session = state.connect.connect_session(
        token.strip() if scheme.lower() == "bearer" else None,
        mode,
        allow_completed=allow_completed,
    )
    return state, session


def _completion(request: Request, result: ConnectResult, *, relink: bool) -> dict[str, Any]:
    return {
        "kind": "relink" if relink else "link",
        "link_id": result.link.link_id,
        "exchangeable_token": result.exchangeable_token,
        "institution": connect_institution_json(result.institution, base_url(request)),
        "selected_accounts": [connect_account_json(a) for a in result.selected],
    }


def _account_choice(account: Account) -> dict[str, Any]:
    return {
        **connect_account_json(account),
        "balance": {"current": account.current, "currency": account.currency},
    }


def _picker_entry(state: SandboxState, inst: Institution, root: str) -> dict[str, Any]:
    # `login` and `down` steer the page (credentials screen, institution alert); they never
    # reach the launcher.
    return {
        **connect_institution_json(inst, root),
        "login": inst.auth,
        "down": state.catalogue.is_down(inst.institution_id),
    }


def _bank_url(request: Request) -> str:
    configured: str | None = request.app.state.bank_url
    if configured:
        return configured
    return default_bank_url(base_url(request))


def _outcome(request: Request, outcome: LoginOutcome, *, relink: bool) -> dict[str, Any]:
    if isinstance(outcome, ConnectResult):
        return {"completion": _completion(request, outcome, relink=relink)}
    if isinstance(outcome, MfaRequired):
        challenge: dict[str, Any] = {
            "institution_id": outcome.institution.institution_id,
            "kind": outcome.kind,
        }
        if outcome.kind == "otp_device":
            challenge["devices"] = list(OTP_DEVICES)
        return {"mfa": challenge}
    if isinstance(outcome, OAuthRequired):
        url = f"{_bank_url(request)}/oauth/authorize?state={outcome.oauth_state}"
        return {"oauth": {"url": url, "institution_id": outcome.institution.institution_id}}
    return {"accounts": [_account_choice(a) for a in outcome]}


async def session_info(request: Request) -> Response:
    state, session = _session(request)
    root = base_url(request)
    body: dict[str, Any] = {
        "mode": "relink" if session.is_relink else "link",
        "status": session.status,
        "institutions": [],
        "preselected_institution_id": session.institution_id,
        "relink": None,
        "completion": None,
        # A /continue page resumes an OAuth login started in another window.
        "oauth_institution_id": session.oauth_institution_id,
        "oauth_answered": session.oauth_outcome is not None,
        # The Permissions screen's rows (products the session asks for; required ones fixed).
        "permissions": state.connect.permissions(session),
    }
    if session.status == "completed":
        body["completion"] = _completion(
            request, state.connect.connect_result(session), relink=session.is_relink
        )
    elif session.is_relink:
        link, inst = state.connect.relink_target(session)
        body["relink"] = {"link_id": link.link_id, "institution_id": inst.institution_id}
        body["institutions"] = [_picker_entry(state, inst, root)]
    else:
        body["institutions"] = [
            _picker_entry(state, inst, root) for inst in state.connect.offered_institutions(session)
        ]
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def choose_institution(request: Request) -> Response:
    state, session = _session(request)
    body = await _connect_body(request, ConnectInstitutionIn)
    outcome = state.connect.connect_institution(
        session, body.institution_id, body.username, body.password
    )
    return JSONResponse(_outcome(request, outcome, relink=session.is_relink))


async def submit_mfa(request: Request) -> Response:
    state, session = _session(request)
    body = await _connect_body(request, ConnectMfaIn)
    outcome = state.connect.submit_mfa(session, body.code)
    return JSONResponse(_outcome(request, outcome, relink=session.is_relink))


async def submit_otp_device(request: Request) -> Response:
    state, session = _session(request)
    body = await _connect_body(request, ConnectOtpDeviceIn)
    outcome = state.connect.submit_otp_device(session, body.device_id)
    return JSONResponse(_outcome(request, outcome, relink=session.is_relink))


async def grant_permissions(request: Request) -> Response:
    state, session = _session(request)
    body = await _connect_body(request, ConnectPermissionsIn)
    granted = state.connect.grant_permissions(session, body.products)
    return JSONResponse({"granted": granted})


async def finish_oauth(request: Request) -> Response:
    state, session = _session(request, allow_completed=True)
    body = await _connect_body(request, ConnectOAuthFinishIn)
    outcome = state.connect.finish_oauth(session, body.redirect_url)
    return JSONResponse(_outcome(request, outcome, relink=session.is_relink))


async def oauth_status(request: Request) -> Response:
    """Polled by a page waiting on the bank, to notice a flow finished in another window."""
    state, session = _session(request, allow_completed=True)
    completed = session.status == "completed"
    body: dict[str, Any] = {"answered": session.oauth_outcome is not None, "completed": completed}
    if completed:
        body["completion"] = _completion(
            request, state.connect.connect_result(session), relink=session.is_relink
        )
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def complete(request: Request) -> Response:
    state, session = _session(request, allow_completed=True)
    body = await _connect_body(request, ConnectCompleteIn)
    result = state.connect.complete_link(session, body.account_ids)
    return JSONResponse({"completion": _completion(request, result, relink=session.is_relink)})


ModelT = TypeVar("ModelT", bound=BaseModel)


async def _connect_body(request: Request, model: type[ModelT]) -> ModelT:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise ConnectError(400, "invalid_request", "The request could not be understood.") from exc


def routes() -> list[BaseRoute]:
    page = _read_ui_file("connect.html")
    assets = {name: _read_ui_file(name) for name in _ASSET_TYPES}

    async def connect_page(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=UI_HEADERS)

    async def connect_asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return Response(
            assets[name],
            media_type=_ASSET_TYPES[name],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    return [
        Route("/start", connect_page, methods=["GET"]),
        Route("/relink", connect_page, methods=["GET"]),
        Route("/continue", connect_page, methods=["GET"]),
        Route("/connect-assets/{name}", connect_asset, methods=["GET"]),
        Route("/connect-api/session", session_info, methods=["GET"]),
        Route("/connect-api/institution", choose_institution, methods=["POST"]),
        Route("/connect-api/complete", complete, methods=["POST"]),
        Route("/connect-api/mfa", submit_mfa, methods=["POST"]),
        Route("/connect-api/otp/device", submit_otp_device, methods=["POST"]),
        Route("/connect-api/permissions", grant_permissions, methods=["POST"]),
        Route("/connect-api/oauth/finish", finish_oauth, methods=["POST"]),
        Route("/connect-api/oauth/status", oauth_status, methods=["GET"]),
    ]
