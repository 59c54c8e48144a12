"""Linkdesk's process: the dashboard, MoneyKit's webhooks and the sync worker in one ASGI app.

`streamlit run server.py` (what `make run` does) serves:

* the dashboard (`dashboard.py`) at `/`;
* `POST /webhooks/moneykit`, MoneyKit's signed webhooks, verified and queued by the core;
* `GET /healthz`, a liveness probe for the process and its store;
* security headers on every response (`linkdesk.http_security`: CSP, frame-ancestors,
  nosniff, no-referrer) and Streamlit's own `/_stcore/metrics` closed;
* `GET /metrics`, Prometheus metrics (bearer token `LINKDESK_METRICS_TOKEN` when set);
* `GET /auth/session` and `GET /auth/sign-out`, which set and clear the staff session cookie
  (`linkdesk.staff_web`);
* the reconciliation worker in a background thread, unless `LINKDESK_RUN_WORKER=false` (then run
  `python -m linkdesk worker` as its own process, e.g. one worker beside several dashboards).

Everything comes from `linkdesk.bootstrap.process_services`, built once per process by the core's
bootstrap; the pages get the same object through `ui.wiring`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from linkdesk.bootstrap import prepare_to_serve, process_services
from linkdesk.http_security import SecurityHeadersMiddleware
from linkdesk.metrics import CONTENT_TYPE_LATEST, authorized
from linkdesk.services.staff_auth import StaffAuth
from linkdesk.settings import Settings
from linkdesk.staff_web import staff_session_routes
from linkdesk.webhooks.asgi import WEBHOOK_PATH, webhook_route

logger = logging.getLogger("linkdesk.server")


@functools.cache
def _webhook_endpoint() -> Callable[[Request], Awaitable[Response]]:
    # Built on first use, from the services the pages use (created once per process).
    endpoint: Callable[[Request], Awaitable[Response]] = webhook_route(
        process_services().webhooks, WEBHOOK_PATH
    ).endpoint
    return endpoint


async def receive_webhook(request: Request) -> Response:
    return await _webhook_endpoint()(request)


async def healthz(request: Request) -> JSONResponse:
    # Constant time: one round trip to the store, whatever the number of links.
    def probe() -> bool:
        return process_services().store.ping()

    try:
        ok = await run_in_threadpool(probe)
    except Exception:
        logger.exception("health probe failed")
        ok = False
    return JSONResponse({"ok": ok}, status_code=200 if ok else 503)


async def metrics(request: Request) -> Response:
    services = process_services()
    token = services.settings.metrics_token
    if not authorized(
        token.get_secret_value() if token else None, request.headers.get("authorization")
    ):
        return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    # The shared gauges read the database: off the event loop.
    body = await run_in_threadpool(services.metrics.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _staff_auth() -> StaffAuth:
    return process_services().staff


def _staff_routes() -> list[Route]:
    # Read from the environment here, without building the services at import time. A proxy's
    # X-Forwarded-Proto counts only where its X-Forwarded-For is trusted too.
    return staff_session_routes(_staff_auth, trust_forwarded_proto=Settings().trust_forwarded_for)


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    services = process_services()
    prepare_to_serve(services)
    stop = threading.Event()
    worker: threading.Thread | None = None
    if services.settings.run_worker:
        worker = threading.Thread(
            target=services.worker.run_forever, args=(stop,), name="linkdesk-worker", daemon=True
        )
        worker.start()
        logger.info("sync worker started")
    try:
        yield
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=15)


app = st.App(
    "dashboard.py",
    routes=[
        Route(WEBHOOK_PATH, receive_webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *_staff_routes(),
    ],
    lifespan=lifespan,
    middleware=[
        # Outermost: every response gets the headers, including Streamlit's own and errors.
        # Settings are read from the environment here, as build_services reads them.
        Middleware(SecurityHeadersMiddleware, connect_host=Settings().moneykit_connect_host),
    ],
)
