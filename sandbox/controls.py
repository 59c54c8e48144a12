"""Test controls under ``/_sandbox/``: never on MoneyKit's own paths, no auth.

Every control is listed in the README. They change the app instance's state only.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.api import backend, base_url
from sandbox.errors import validation_error
from sandbox.limits import FaultRule
from sandbox.scenarios import ScenarioError
from sandbox.schemas import (
    ClockIn,
    FaultsIn,
    ForceLinkStateIn,
    InstitutionStatusIn,
    OAuthSettingsIn,
    RateLimitsIn,
    RefreshFailureIn,
    ResetIn,
    ScenarioStartIn,
    WebhookSettingsIn,
    parse_body,
)
from sandbox.state import SandboxState
from sandbox.views import iso, link_json
from sandbox.webhooks import WebhookFaults

# Names this server as the offline sandbox: Linkdesk's demo mode refuses any MoneyKit that does
# not answer this (the real MoneyKit has no /_sandbox/ paths at all).
SANDBOX_SERVICE = "moneykit-sandbox"


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True, "service": SANDBOX_SERVICE})


def _summary(state: SandboxState) -> dict[str, object]:
    counts = Counter(link.state for link in state.links.values())
    return {"ok": True, "seed": state.seed, "links": len(state.links), "states": dict(counts)}


async def reset(request: Request) -> Response:
    state = backend(request)
    body = await parse_body(request, ResetIn, optional=True)
    state.reset(seed=body.seed, demo_links=body.demo_links)
    return JSONResponse(_summary(state))


async def seed(request: Request) -> Response:
    """Same as reset, but the seed is required: the intent reads better in tests."""
    state = backend(request)
    body = await parse_body(request, ResetIn)
    if body.seed is None:
        raise validation_error(["body", "seed"], "Field required", "missing")
    state.reset(seed=body.seed, demo_links=body.demo_links)
    return JSONResponse(_summary(state))


async def force_link_state(request: Request) -> Response:
    state = backend(request)
    body = await parse_body(request, ForceLinkStateIn)
    link = state.registry.force_state(request.path_params["link_id"], body.state, body.error_code)
    return JSONResponse(link_json(link, state.institutions[link.institution_id], base_url(request)))


async def fail_next_refresh(request: Request) -> Response:
    """The next refresh of these products fails with ``error_code`` (a LinkProductError)."""
    state = backend(request)
    body = await parse_body(request, RefreshFailureIn)
    link = state.registry.fail_next_refresh(
        request.path_params["link_id"], body.products, body.error_code
    )
    return JSONResponse(
        {"link_id": link.link_id, "products": body.products, "error_code": body.error_code}
    )


def _clock_body(state: SandboxState) -> dict[str, object]:
    return {"now": iso(state.clock()), "offset_seconds": state.clock_offset.total_seconds()}


async def get_time(request: Request) -> Response:
    return JSONResponse(_clock_body(backend(request)))


async def set_time(request: Request) -> Response:
    state = backend(request)
    body = await parse_body(request, ClockIn)
    if body.offset_seconds is not None:
        state.clock_offset = timedelta(seconds=body.offset_seconds)
    if body.advance_seconds is not None:
        state.clock_offset += timedelta(seconds=body.advance_seconds)
    return JSONResponse(_clock_body(state))


def _faults_body(state: SandboxState) -> dict[str, object]:
    return {"rules": [rule.describe() for rule in state.faults.rules]}


async def get_faults(request: Request) -> Response:
    return JSONResponse(_faults_body(backend(request)))


async def set_faults(request: Request) -> Response:
    state = backend(request)
    body = await parse_body(request, FaultsIn)
    try:
        rules = [FaultRule(**rule.model_dump()) for rule in body.rules]
    except re.error as exc:
        raise validation_error(["body", "rules"], f"Invalid pattern: {exc}", "value_error") from exc
    state.faults.configure(rules, body.seed)
    return JSONResponse(_faults_body(state))


async def clear_faults(request: Request) -> Response:
    state = backend(request)
    state.faults.configure([], 0)
    return JSONResponse(_faults_body(state))


async def get_rate_limits(request: Request) -> Response:
    return JSONResponse({"enabled": backend(request).limiter.enabled})


async def set_rate_limits(request: Request) -> Response:
    state = backend(request)
    body = await parse_body(request, RateLimitsIn)
    state.limiter.enabled = body.enabled
    state.limiter.reset()
    return JSONResponse({"enabled": state.limiter.enabled})


async def get_webhooks(request: Request) -> Response:
    dispatcher = backend(request).webhooks
    return JSONResponse({"deliveries": dispatcher.records(), "pending": dispatcher.pending()})


async def clear_webhooks(request: Request) -> Response:
    backend(request).webhooks.clear()
    return Response(status_code=204)


async def webhook_settings(request: Request) -> Response:
    dispatcher = backend(request).webhooks
    body = await parse_body(request, WebhookSettingsIn)
    dispatcher.set_faults(
        WebhookFaults(
            drop_rate=body.drop_rate,
            duplicate_rate=body.duplicate_rate,
            reorder_rate=body.reorder_rate,
            reorder_delay_s=body.reorder_delay_s,
            seed=body.seed,
        )
    )
    config = dispatcher.config
    if body.retry_window_s is not None:
        config.retry_window_s = body.retry_window_s
    if body.first_backoff_s is not None:
        config.first_backoff_s = body.first_backoff_s
    if body.time_scale is not None:
        config.time_scale = body.time_scale
    return JSONResponse(
        {
            "faults": dispatcher.faults.__dict__,
            "retry_window_s": config.retry_window_s,
            "first_backoff_s": config.first_backoff_s,
            "time_scale": config.time_scale,
        }
    )


async def rotate_key(request: Request) -> Response:
    state = backend(request)
    key = state.events.rotate_signing_key()
    return JSONResponse({"kid": key.kid, "kids": [k.kid for k in state.signing_keys]})


async def institution_status(request: Request) -> Response:
    state = backend(request)
    body = await parse_body(request, InstitutionStatusIn)
    touched = state.set_institution_down(request.path_params["institution_id"], body.down)
    return JSONResponse(
        {"down": sorted(state.down_institutions), "links_changed": [t.link_id for t in touched]}
    )


async def oauth_settings(request: Request) -> Response:
    state = backend(request)
    body = await parse_body(request, OAuthSettingsIn)
    state.connect.cut_opener = body.cut_opener
    return JSONResponse({"cut_opener": state.connect.cut_opener})


def _scenarios_body(state: SandboxState) -> dict[str, object]:
    return {"scenarios": state.scenarios.catalogue(), "runs": state.scenarios.runs()}


async def list_scenarios(request: Request) -> Response:
    state = backend(request)
    state.scenarios.tick()
    return JSONResponse(_scenarios_body(state))


async def start_scenario(request: Request) -> Response:
    state = backend(request)
    body = await parse_body(request, ScenarioStartIn, optional=True)
    try:
        run = state.scenarios.start(
            request.path_params["name"], institution_id=body.institution_id, speed=body.speed
        )
    except ScenarioError as exc:
        raise validation_error(["path", "name"], str(exc), "value_error") from exc
    return JSONResponse(run.describe(), status_code=201)


async def stop_scenarios(request: Request) -> Response:
    return JSONResponse({"stopped": backend(request).scenarios.stop_all()})


async def settle_refreshes(request: Request) -> Response:
    return JSONResponse({"settled": backend(request).registry.settle_all_refreshes()})


def routes() -> list[BaseRoute]:
    return [
        Route("/_sandbox/health", health, methods=["GET"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        Route("/_sandbox/seed", seed, methods=["POST"]),
        Route("/_sandbox/links/{link_id}/state", force_link_state, methods=["POST"]),
        Route("/_sandbox/links/{link_id}/refresh-failure", fail_next_refresh, methods=["POST"]),
        Route("/_sandbox/time", get_time, methods=["GET"]),
        Route("/_sandbox/time", set_time, methods=["POST"]),
        Route("/_sandbox/faults", get_faults, methods=["GET"]),
        Route("/_sandbox/faults", set_faults, methods=["POST"]),
        Route("/_sandbox/faults", clear_faults, methods=["DELETE"]),
        Route("/_sandbox/rate-limits", get_rate_limits, methods=["GET"]),
        Route("/_sandbox/rate-limits", set_rate_limits, methods=["POST"]),
        Route("/_sandbox/webhooks", get_webhooks, methods=["GET"]),
        Route("/_sandbox/webhooks", clear_webhooks, methods=["DELETE"]),
        Route("/_sandbox/webhooks/settings", webhook_settings, methods=["POST"]),
        Route("/_sandbox/keys/rotate", rotate_key, methods=["POST"]),
        Route(
            "/_sandbox/institutions/{institution_id}/status", institution_status, methods=["POST"]
        ),
        Route("/_sandbox/oauth", oauth_settings, methods=["POST"]),
        Route("/_sandbox/products/settle", settle_refreshes, methods=["POST"]),
        Route("/_sandbox/scenarios", list_scenarios, methods=["GET"]),
        Route("/_sandbox/scenarios", stop_scenarios, methods=["DELETE"]),
        Route("/_sandbox/scenarios/{name}", start_scenario, methods=["POST"]),
    ]
