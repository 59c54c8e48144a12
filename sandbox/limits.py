"""Rate limits, injected faults and request ids, applied in front of the REST routes.

Rate limits follow protocol doc §6.2: a sliding one-minute window per link and per app, counted
with the *sandbox* clock (so ``/_sandbox/time`` moves windows too). An exceeded limit answers 429
``api_error.rate_limit_exceeded`` with ``Retry-After`` in whole seconds. Limits are on by default;
``/_sandbox/rate-limits`` turns them off.

Faults are rules matched against ``"<METHOD> <path>"`` (a regular expression): added latency, a
share of 429s (with ``Retry-After``) and a share of 5xx, drawn from a seeded RNG so runs repeat.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

WINDOW_S = 60.0
_ID = r"(?P<link>[^/]+)"


@dataclass(frozen=True)
class LimitRule:
    method: str
    pattern: re.Pattern[str]
    per_link: int | None
    per_app: int | None
    window_s: float = WINDOW_S


def _rule(
    method: str, path: str, per_link: int | None, per_app: int | None, window_s: float = WINDOW_S
) -> LimitRule:
    return LimitRule(method, re.compile(f"^{path}$"), per_link, per_app, window_s)


# Order matters: the first match wins (`/links/import` before `/links/{id}`).
RULES: tuple[LimitRule, ...] = (
    _rule("POST", "/auth/token", None, 300),
    _rule("GET", "/institutions", None, 30),
    _rule("GET", "/institutions/[^/]+", None, 400),
    _rule("POST", "/link-session", None, 1200),
    _rule("GET", "/links", None, 600),
    _rule("POST", "/links/import", None, 60),
    _rule("GET", f"/links/{_ID}", 15, 1000),
    _rule("PATCH", f"/links/{_ID}", 4, 600),
    _rule("DELETE", f"/links/{_ID}", None, 600),
    _rule("GET", f"/links/{_ID}/accounts", 4, 600),
    _rule("GET", f"/links/{_ID}/accounts/numbers", 3, 600),
    _rule("GET", f"/links/{_ID}/accounts/[^/]+", 15, 600),
    _rule("GET", f"/links/{_ID}/identity", 3, 600),
    # Not in MoneyKit's readable table: the conservative per-link/per-app default (§6.2).
    _rule("GET", f"/links/{_ID}/transactions", 4, 600),
    _rule("GET", f"/links/{_ID}/transactions/sync", 4, 600),
    _rule("GET", f"/links/{_ID}/investments/.*", 4, 600),
    _rule("GET", "/users/[^/]+/.*", None, 600),
    _rule("POST", f"/webhooks/test/link/{_ID}", 4, 600),
)

# Per-product refresh limits (§6.2): accounts and transactions hourly, the rest daily.
PRODUCT_REFRESH_WINDOW_S = {
    "accounts": 3600.0,
    "transactions": 3600.0,
}
DEFAULT_PRODUCT_REFRESH_WINDOW_S = 86400.0


class RateLimiter:
    """Sliding-window counters keyed by ``(rule, scope)``, on an injectable clock."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self.enabled = True
        self._hits: dict[tuple[str, ...], deque[float]] = {}

    def reset(self) -> None:
        self._hits.clear()

    def hit(self, key: tuple[str, ...], limit: int, window_s: float = WINDOW_S) -> float | None:
        """Count a request; ``None`` if allowed, else the seconds until it would be."""
        if not self.enabled:
            return None
        now = self._clock().timestamp()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window_s:
            hits.popleft()
        if len(hits) >= limit:
            return max(hits[0] + window_s - now, 0.001)
        hits.append(now)
        return None

    def check(self, method: str, path: str) -> float | None:
        for rule in RULES:
            if rule.method != method:
                continue
            match = rule.pattern.match(path)
            if match is None:
                continue
            label = f"{rule.method} {rule.pattern.pattern}"
            waits: list[float] = []
            link = match.groupdict().get("link")
            if rule.per_link is not None and link:
                wait = self.hit((label, "link", link), rule.per_link, rule.window_s)
                if wait is not None:
                    return wait
            if rule.per_app is not None:
                wait = self.hit((label, "app"), rule.per_app, rule.window_s)
                if wait is not None:
                    waits.append(wait)
            return max(waits) if waits else None
        return None


@dataclass
class FaultRule:
    pattern: str  # regular expression matched against "<METHOD> <path>"
    latency_ms: int = 0
    rate_limit_rate: float = 0.0
    retry_after_s: int = 1
    error_rate: float = 0.0
    error_status: int = 503
    compiled: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.compiled = re.compile(self.pattern)

    def describe(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "latency_ms": self.latency_ms,
            "rate_limit_rate": self.rate_limit_rate,
            "retry_after_s": self.retry_after_s,
            "error_rate": self.error_rate,
            "error_status": self.error_status,
        }


class Faults:
    def __init__(self) -> None:
        self.rules: list[FaultRule] = []
        self.rng = random.Random(0)

    def configure(self, rules: list[FaultRule], seed: int) -> None:
        self.rules = rules
        self.rng = random.Random(seed)

    def match(self, method: str, path: str) -> FaultRule | None:
        target = f"{method} {path}"
        for rule in self.rules:
            if rule.compiled.search(target):
                return rule
        return None


# Paths that are not MoneyKit's REST API: never limited, never faulted.
_EXEMPT = ("/_sandbox/", "/assets/", "/connect-api/", "/connect-assets/")
_EXEMPT_EXACT = ("/start", "/relink", "/continue", "/.well-known/jwks.json")


def _is_api(path: str) -> bool:
    return not (path.startswith(_EXEMPT) or path in _EXEMPT_EXACT)


def _error(status: int, code: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"error_code": code, "error_message": message, "request_id": request_id}
    ).encode()


class SandboxMiddleware:
    """Request id on every response; rate limits and faults in front of the REST API."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{secrets.token_hex(10)}"
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        method, path = scope["method"], scope["path"]
        state = scope["app"].state.sandbox
        if _is_api(path):
            rule = state.faults.match(method, path)
            if rule is not None:
                if rule.latency_ms:
                    await asyncio.sleep(rule.latency_ms / 1000)
                roll = state.faults.rng.random()
                if roll < rule.rate_limit_rate:
                    await self._reply(
                        send_with_id,
                        429,
                        request_id,
                        str(rule.retry_after_s),
                        "api_error.rate_limit_exceeded",
                        "Rate limit exceeded",
                    )
                    return
                if roll < rule.rate_limit_rate + rule.error_rate:
                    await self._reply(
                        send_with_id,
                        rule.error_status,
                        request_id,
                        None,
                        "api_error.internal_error",
                        "Internal server error (injected fault).",
                    )
                    return
            wait = state.limiter.check(method, path)
            if wait is not None:
                await self._reply(
                    send_with_id,
                    429,
                    request_id,
                    str(math.ceil(wait)),
                    "api_error.rate_limit_exceeded",
                    "Rate limit exceeded",
                )
                return
        await self.app(scope, receive, send_with_id)

    @staticmethod
    async def _reply(
        send: Send,
        status: int,
        request_id: str,
        retry_after: str | None,
        code: str,
        message: str,
    ) -> None:
        body = _error(status, code, message, request_id)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if retry_after is not None:
            headers.append((b"retry-after", retry_after.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
