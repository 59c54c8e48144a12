"""The HTTP face of the webhook receiver, as a plain Starlette route.

It mounts in any Starlette/ASGI app (the dashboard's server or a small standalone one). The raw
body is read before anything parses it (the signature covers the exact bytes), the blocking
receiver runs in a worker thread, and the answer is ``{"ok", "reason"}``: the request body is
never echoed back. A body over the receiver's size limit is refused with 413 before it is read:
on its declared ``Content-Length``, or as soon as the streamed bytes pass the limit.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from linkdesk.webhooks.receiver import WebhookReceiver
from linkdesk.webhooks.verify import Reason

__all__ = ["WEBHOOK_PATH", "webhook_route"]

WEBHOOK_PATH = "/webhooks/moneykit"


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None once it grows past ``limit`` (without reading the rest into memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_route(receiver: WebhookReceiver, path: str = WEBHOOK_PATH) -> Route:
    """``POST <path>`` handled by ``receiver``."""

    async def endpoint(request: Request) -> JSONResponse:
        body = await _read_limited(request, receiver.max_body_bytes)
        if body is None:
            # Counted in memory only (no store, no thread hop): a flood of these costs nothing.
            receiver.count_refusal(
                Reason.TOO_LARGE, request.headers.get("moneykit-delivery-token"), None
            )
            return JSONResponse(
                {"ok": False, "reason": Reason.TOO_LARGE.value},
                status_code=413,
                # The rest of the body is not read: the connection cannot carry another request.
                headers={"Cache-Control": "no-store", "Connection": "close"},
            )
        result = await run_in_threadpool(receiver.receive, body, dict(request.headers))
        return JSONResponse(
            {"ok": result.ok, "reason": result.reason.value},
            status_code=result.status_code,
            headers={"Cache-Control": "no-store"},
        )

    return Route(path, endpoint, methods=["POST"], name="moneykit_webhook")
