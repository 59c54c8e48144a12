"""Build the sandbox ASGI app. All state hangs off the returned app instance."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from sandbox import api, api_data, assets, connect_ui, controls
from sandbox.bank import create_bank_app, default_bank_url
from sandbox.errors import (
    ConnectError,
    MoneyKitError,
    connect_error_handler,
    method_not_allowed,
    moneykit_error_handler,
    route_not_found,
)
from sandbox.limits import SandboxMiddleware
from sandbox.state import Clock, SandboxState
from sandbox.webhooks import WebhookConfig

logger = logging.getLogger("sandbox")


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and wrong methods answer in MoneyKit's error shape, like every other error.
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = route_not_found()
    elif exc.status_code == 405:
        error = method_not_allowed()
        error.headers = dict(exc.headers or {})
    else:
        error = MoneyKitError(exc.status_code, "api_error.request.invalid", str(exc.detail))
    return await moneykit_error_handler(request, error)


SCENARIO_TICK_S = 0.5


async def _tick_scenarios(state: SandboxState) -> None:
    while True:
        await asyncio.sleep(SCENARIO_TICK_S)
        try:
            state.scenarios.tick()
        except Exception:
            # A broken step must not end the loop that plays every other scenario.
            logger.exception("scenario step failed")


def create_app(
    *,
    client_id: str,
    client_secret: str,
    seed: int = 42,
    demo_links: int = 300,
    public_url: str | None = None,
    clock: Clock | None = None,
    bank_url: str | None = None,
    webhook_config: WebhookConfig | None = None,
    refresh_delay_s: float = 0.5,
    rate_limits: bool = True,
    demo_webhook_url: str | None = None,
    redirect_uris: Sequence[str] | None = None,
) -> Starlette:
    """A fresh sandbox.

    ``public_url`` is the origin clients use (``http://localhost:8611``); it prefixes image URLs
    and is the ``iss`` of webhook signatures. Without it the origin of each request is used.
    ``clock`` returns aware UTC datetimes and lets tests move time without sleeping.
    ``bank_url`` is the origin of OAuth Bank's pages (default: port + 1); the bank app itself is
    ``app.state.bank_app`` and must be served there. ``webhook_config`` sets the retry schedule
    (``time_scale`` speeds it up for tests); ``refresh_delay_s`` is how long a product refresh
    takes to land after its 202; ``rate_limits`` turns MoneyKit's limits on (the default).
    ``demo_webhook_url`` is the webhook URL the customer app gave the demo links (default none).
    ``redirect_uris`` are the redirect URIs registered for the client (``*`` as port: any port;
    default Linkdesk's local ``/oauth_return`` pages).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.webhooks.start()
        # Scenario steps run on the event loop, like every request, so they never race one.
        ticker = asyncio.create_task(_tick_scenarios(state))
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            state.webhooks.stop()

    app = Starlette(
        routes=[
            *api_data.routes(),
            *api.routes(),
            *assets.routes(),
            *connect_ui.routes(),
            *controls.routes(),
        ],
        middleware=[Middleware(SandboxMiddleware)],
        exception_handlers={
            MoneyKitError: moneykit_error_handler,
            ConnectError: connect_error_handler,
            HTTPException: _http_error,
        },
        lifespan=lifespan,
    )
    state = SandboxState(
        client_id=client_id,
        client_secret=client_secret,
        seed=seed,
        demo_links=demo_links,
        clock=clock,
        webhook_config=webhook_config,
        refresh_delay_s=refresh_delay_s,
        demo_webhook_url=demo_webhook_url,
        redirect_uris=redirect_uris,
    )
    state.limiter.enabled = rate_limits
    app.state.sandbox = state
    app.state.public_url = public_url.rstrip("/") if public_url else None
    if public_url:
        state.events.issuer = app.state.public_url
    app.state.bank_url = (
        bank_url.rstrip("/") if bank_url else (default_bank_url(public_url) if public_url else None)
    )
    app.state.bank_app = create_bank_app(state)
    return app
