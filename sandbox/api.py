"""MoneyKit REST routes. Thin: read the request, call the backend of its area, render JSON.

Success status codes are exactly MoneyKit's, because the official SDK picks its response model by
exact status and returns ``None`` for any other 2xx (protocol doc §3.2).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox import errors, scopes
from sandbox.schemas import (
    CreateLinkSessionIn,
    ExchangeTokenIn,
    RefreshProductsIn,
    UpdateLinkIn,
    parse_body,
)
from sandbox.state import SandboxState
from sandbox.views import account_json, institution_json, iso, link_json


def backend(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


def base_url(request: Request) -> str:
    """The origin clients reach us on; used for absolute image URLs."""
    configured: str | None = request.app.state.public_url
    if configured:
        return configured
    return str(request.base_url).rstrip("/")


def check_api_version(request: Request) -> None:
    """MoneyKit pins behaviour to the ``MoneyKit-Version`` header: absent means the app's default
    version, a known one is honoured, anything else is refused."""
    version = request.headers.get("moneykit-version")
    if version is not None and version not in errors.SUPPORTED_API_VERSIONS:
        raise errors.unsupported_api_version(version)


def _authorize(request: Request) -> SandboxState:
    check_api_version(request)
    state = backend(request)
    access = state.auth.authenticate(request.headers.get("authorization"))
    scopes.check(access.scope, request.method, request.url.path)
    return state


def _render_link(request: Request, state: SandboxState, link_id: str) -> dict[str, object]:
    link = state.registry.link(link_id)
    return link_json(link, state.institutions[link.institution_id], base_url(request))


def _int_query(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise errors.validation_error(
            ["query", name], "Input should be a valid integer", "int_parsing"
        ) from exc


def _bool_query(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise errors.validation_error(
        ["query", name], "Input should be a valid boolean", "bool_parsing"
    )


# ------------------------------------------------------------------------------------- auth
def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    if not header:
        return None, None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise errors.unauthorized("Malformed basic authorization header.", status=400) from exc
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


async def create_access_token(request: Request) -> Response:
    check_api_version(request)
    raw = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if raw.strip() and content_type != "application/x-www-form-urlencoded":
        # MoneyKit's token endpoint is an OAuth 2 client-credentials endpoint: form data only.
        raise errors.validation_error(
            ["body"],
            "Expected form data (application/x-www-form-urlencoded)",
            "model_attributes_type",
        )
    fields = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    grant_type = fields.get("grant_type")
    if grant_type is not None and grant_type != "client_credentials":
        raise errors.unauthorized(
            "Only the client_credentials grant type is supported.", status=400
        )
    client_id, client_secret = fields.get("client_id"), fields.get("client_secret")
    if not client_id and not client_secret:
        # MoneyKit's docs also show the credentials as X-Client-Id / X-Client-Secret headers.
        client_id = request.headers.get("x-client-id")
        client_secret = request.headers.get("x-client-secret")
    if not client_id and not client_secret:
        client_id, client_secret = _basic_credentials(request.headers.get("authorization"))
    token, expires_in = backend(request).auth.issue_access_token(
        client_id, client_secret, scopes.parse_requested(fields.get("scope"))
    )
    return JSONResponse(
        {"access_token": token, "token_type": "bearer", "expires_in": expires_in},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


async def introspect(request: Request) -> Response:
    state = backend(request)
    access = state.auth.authenticate(request.headers.get("authorization"))
    app_id = f"app_{state.client_id}"
    return JSONResponse(
        {
            "client_id": state.client_id,
            "client_name": state.app_name,
            "scope": access.scope,
            "app": {
                "app_id": app_id,
                "name": state.app_name,
                "id": app_id,
                "app_name": state.app_name,
            },
        }
    )


async def jwks(request: Request) -> Response:
    keys = [key.public_jwk() for key in backend(request).signing_keys]
    return JSONResponse({"keys": keys})


# ------------------------------------------------------------------------------ link session
async def create_link_session(request: Request) -> Response:
    state = _authorize(request)
    body = await parse_body(request, CreateLinkSessionIn)
    token = state.connect.create_link_session(body)
    return JSONResponse({"link_session_token": token}, status_code=201)


async def exchange_token(request: Request) -> Response:
    state = _authorize(request)
    body = await parse_body(request, ExchangeTokenIn)
    exchanged = state.connect.exchange_token(body.exchangeable_token)
    land_refresh(state, exchanged.refresh.link.link_id, exchanged.refresh.products)
    link = exchanged.link
    rendered = link_json(link, state.institutions[link.institution_id], base_url(request))
    return JSONResponse({"link_id": link.link_id, "link": rendered}, status_code=201)


# ------------------------------------------------------------------------------------ links
async def get_links(request: Request) -> Response:
    state = _authorize(request)
    links, next_cursor = state.registry.list_links(
        cursor=request.query_params.get("cursor") or None, limit=_int_query(request, "limit")
    )
    return JSONResponse(
        {
            "links": [
                {"link_id": link.link_id, "created_at": iso(link.created_at)} for link in links
            ],
            "next_cursor": next_cursor,
        }
    )


async def get_link(request: Request) -> Response:
    state = _authorize(request)
    return JSONResponse(_render_link(request, state, request.path_params["link_id"]))


async def update_link(request: Request) -> Response:
    state = _authorize(request)
    link_id = request.path_params["link_id"]
    state.registry.live_link(link_id)
    body = await parse_body(request, UpdateLinkIn, optional=True)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    state.registry.update_link(link_id, changes)
    return JSONResponse(_render_link(request, state, link_id))


async def delete_link(request: Request) -> Response:
    state = _authorize(request)
    state.registry.delete_link(request.path_params["link_id"])
    return Response(status_code=204)


async def reset_link(request: Request) -> Response:
    state = _authorize(request)
    link = state.registry.reset_link(request.path_params["link_id"])
    return JSONResponse(_render_link(request, state, link.link_id))


def land_refresh(state: SandboxState, link_id: str, products: tuple[str, ...]) -> None:
    """Land a started refresh ``refresh_delay_s`` from now (at once when the delay is 0)."""
    if not products:
        return
    if state.refresh_delay_s <= 0:
        state.registry.settle_refresh(link_id)
        return
    # Lands later on this same event loop, so state is still touched by one thread only.
    asyncio.get_running_loop().call_later(
        state.refresh_delay_s, state.registry.settle_refresh, link_id
    )


async def refresh_products(request: Request) -> Response:
    state = _authorize(request)
    link_id = request.path_params["link_id"]
    state.registry.live_link(link_id)
    body = await parse_body(request, RefreshProductsIn)
    state.registry.refresh_products(link_id, list(body.products))
    land_refresh(state, link_id, tuple(body.products))
    return JSONResponse(_render_link(request, state, link_id), status_code=202)


async def get_accounts(request: Request) -> Response:
    state = _authorize(request)
    # Like every other data endpoint: not before the token exchange, only if granted.
    link = state.registry.data_link(request.path_params["link_id"], "accounts")
    wanted = set(request.query_params.getlist("account_ids"))
    accounts = [a for a in link.accounts if not wanted or a.account_id in wanted]
    return JSONResponse(
        {
            "accounts": [account_json(a) for a in accounts],
            "link": link_json(link, state.institutions[link.institution_id], base_url(request)),
        }
    )


# ----------------------------------------------------------------------------- institutions
async def get_institutions(request: Request) -> Response:
    state = _authorize(request)
    page, next_cursor = state.catalogue.list_institutions(
        name=request.query_params.get("name") or None,
        featured=_bool_query(request, "featured"),
        cursor=request.query_params.get("cursor") or None,
        limit=_int_query(request, "limit"),
    )
    root = base_url(request)
    return JSONResponse(
        {
            "institutions": [institution_json(inst, root) for inst in page],
            "cursors": {"next": next_cursor},
        }
    )


async def get_institution(request: Request) -> Response:
    state = _authorize(request)
    inst = state.catalogue.institution(request.path_params["institution_id"])
    return JSONResponse(institution_json(inst, base_url(request)))


def routes() -> list[BaseRoute]:
    return [
        Route("/auth/token", create_access_token, methods=["POST"]),
        Route("/auth/introspect", introspect, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/link-session", create_link_session, methods=["POST"]),
        Route("/link-session/exchange-token", exchange_token, methods=["POST"]),
        Route("/links", get_links, methods=["GET"]),
        Route("/links/{link_id}", get_link, methods=["GET"]),
        Route("/links/{link_id}", update_link, methods=["PATCH"]),
        Route("/links/{link_id}", delete_link, methods=["DELETE"]),
        Route("/links/{link_id}/reset", reset_link, methods=["POST"]),
        Route("/links/{link_id}/products", refresh_products, methods=["POST"]),
        Route("/links/{link_id}/accounts", get_accounts, methods=["GET"]),
        Route("/institutions", get_institutions, methods=["GET"]),
        Route("/institutions/{institution_id}", get_institution, methods=["GET"]),
    ]
