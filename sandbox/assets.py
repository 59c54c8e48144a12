"""Institution images, served without auth so ``<img>`` tags anywhere can show them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.images import IMAGE_KINDS, render
from sandbox.state import SandboxState

_IMAGE_HEADERS = {
    "Cache-Control": "public, max-age=86400",
    # Lets pages with cross-origin isolation (COEP) embed the images.
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Access-Control-Allow-Origin": "*",
    "X-Content-Type-Options": "nosniff",
    # An SVG opened directly must not run anything, even if a name ever carried markup.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


async def institution_image(request: Request) -> Response:
    state: SandboxState = request.app.state.sandbox
    inst = state.institutions.get(request.path_params["institution_id"])
    kind = request.path_params["kind"]
    if inst is None or kind not in IMAGE_KINDS:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    return Response(render(inst, kind), media_type="image/svg+xml", headers=_IMAGE_HEADERS)


def routes() -> list[BaseRoute]:
    return [Route("/assets/institutions/{institution_id}/{kind}.svg", institution_image)]
