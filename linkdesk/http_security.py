"""Security headers for every HTTP response of the dashboard process, as plain ASGI middleware.

The dashboard is an internal tool that staff sign in to, so no other site may frame it
(clickjacking of the sign-in page or of a relink button), the browser must not guess content
types, URLs with a customer's relink token must not leak through ``Referer``, and the page may
only load code from its own origin. The Content-Security-Policy still lets Streamlit, the
Connect component (bundled and served by the dashboard itself) and the hosted Connect UI
(``MONEYKIT_CONNECT_HOST``, which Connect opens in an iframe) run.

The same middleware closes Streamlit's own ``/_stcore/metrics`` endpoint, which would otherwise
tell anyone who asks how many sessions are open and what the caches hold.

It is pure ASGI (not Starlette's ``BaseHTTPMiddleware``) so that streamed responses and the
websocket pass through untouched.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "CLOSED_PATH_SUFFIXES",
    "SecurityHeadersMiddleware",
    "content_security_policy",
    "security_headers",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths answered with 404 whatever comes before them (a base URL path, doubled slashes).
CLOSED_PATH_SUFFIXES = ("/_stcore/metrics",)

_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.DOTALL)


def _origin(url: str) -> str | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _streamlit_inline_script_hashes() -> list[str]:
    """CSP hashes of the inline scripts in Streamlit's own index.html (a one-line flag today).

    Allowing them by hash keeps ``'unsafe-inline'`` out of ``script-src``; when Streamlit
    changes the script, its hash follows because it is read from the installed file.
    """
    # Located, not imported: the core stays free of Streamlit.
    spec = importlib.util.find_spec("streamlit")
    if spec is None or spec.origin is None:
        return []
    try:
        text = (Path(spec.origin).parent / "static" / "index.html").read_bytes()
    except OSError:
        return []
    hashes = []
    for body in _INLINE_SCRIPT.findall(text):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        hashes.append(f"'sha256-{digest}'")
    return hashes


def content_security_policy(connect_host: str) -> str:
    """The policy for the dashboard, allowing the hosted Connect UI at ``connect_host``."""
    connect_origin = _origin(connect_host)
    extra = f" {connect_origin}" if connect_origin else ""
    # blob: because Streamlit loads a custom component's inline JavaScript (the Connect
    # launcher) by importing a blob: URL; only scripts already running on this origin can
    # create one, so it lets nothing from another origin in.
    script_src = " ".join(["'self'", "blob:", *_streamlit_inline_script_hashes()])
    directives = [
        "default-src 'self'",
        f"script-src {script_src}",
        # Streamlit's styling library inserts <style> elements at run time.
        "style-src 'self' 'unsafe-inline'",
        # Logos are stored as data: URIs; charts and downloads use blob: URLs.
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        # 'self' covers the websocket to the same host and port in current browsers.
        f"connect-src 'self'{extra}",
        f"frame-src 'self'{extra}",
        "worker-src 'self' blob:",
        "media-src 'self' data: blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


def security_headers(connect_host: str) -> list[tuple[bytes, bytes]]:
    """The headers added to every response (lower-case names, as ASGI wants them)."""
    pairs = {
        "content-security-policy": content_security_policy(connect_host),
        # For browsers that predate frame-ancestors.
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
        # /repair?token=… must not reach another origin in a Referer header.
        "referrer-policy": "no-referrer",
        "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        "cross-origin-resource-policy": "same-origin",
    }
    return [(name.encode(), value.encode()) for name, value in pairs.items()]


def _closed(path: str) -> bool:
    normalised = re.sub(r"/{2,}", "/", path).rstrip("/")
    return any(normalised.endswith(suffix) for suffix in CLOSED_PATH_SUFFIXES)


class SecurityHeadersMiddleware:
    """Adds :func:`security_headers` to every HTTP response and answers closed paths with 404."""

    def __init__(self, app: ASGIApp, *, connect_host: str) -> None:
        self.app = app
        self._headers = security_headers(connect_host)
        self._names = {name for name, _ in self._headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _closed(scope.get("path", "")):
            await self._not_found(send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept: Iterable[tuple[bytes, bytes]] = (
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in self._names
                )
                message["headers"] = [*kept, *self._headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _not_found(self, send: Send) -> None:
        body = b"Not Found"
        await send(
            {
                "type": "http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    *self._headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
