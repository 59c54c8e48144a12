"""The offline sandbox's controls (``/_sandbox/...``), and the check that MoneyKit *is* the sandbox.

Demo mode only ever talks to a server that names itself the sandbox on ``/_sandbox/health``; the
real MoneyKit has no such path, and its hosts are refused before any request is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from linkdesk.errors import ServiceError

__all__ = [
    "SANDBOX_SERVICE",
    "DemoRefused",
    "SandboxControls",
    "SandboxUnavailable",
    "ScenarioInfo",
    "ScenarioRunInfo",
]

SANDBOX_SERVICE = "moneykit-sandbox"
_REAL_MONEYKIT_DOMAIN = "moneykit.com"


class DemoRefused(ServiceError):
    """Demo mode was asked to act on something that is not the offline sandbox."""


class SandboxUnavailable(ServiceError):
    """The sandbox did not answer, or answered with an error."""


@dataclass(frozen=True, slots=True)
class ScenarioInfo:
    name: str
    title: str
    description: str
    duration_s: float
    default_institution_id: str | None
    default_institution_name: str | None = None


@dataclass(frozen=True, slots=True)
class ScenarioRunInfo:
    run_id: str
    name: str
    title: str
    institution_id: str
    institution_name: str
    status: str
    speed: float
    started_at: str
    finished_at: str | None
    duration_s: float
    steps_done: int
    steps_total: int
    last_step: str
    links_changed: int
    links_still_broken: int


def refuse_real_moneykit(base_url: str) -> None:
    """Raise :class:`DemoRefused` for any URL on MoneyKit's own domain (checked offline)."""
    host = (urlsplit(base_url).hostname or "").lower().rstrip(".")
    if not host:
        raise DemoRefused(f"MONEYKIT_BASE_URL {base_url!r} has no host name.")
    if host == _REAL_MONEYKIT_DOMAIN or host.endswith("." + _REAL_MONEYKIT_DOMAIN):
        raise DemoRefused(
            "Demo mode is refused: MONEYKIT_BASE_URL points at the real MoneyKit. Demo mode only "
            "runs against the offline sandbox (python -m sandbox)."
        )


class SandboxControls:
    """A small client for the sandbox's ``/_sandbox/`` controls."""

    def __init__(self, base_url: str, *, http_client: httpx.Client | None = None) -> None:
        refuse_real_moneykit(base_url)
        self._base = base_url.rstrip("/")
        self._own_client = http_client is None
        self._http = http_client or httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))

    def close(self) -> None:
        if self._own_client:
            self._http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self._base}/_sandbox/{path}"
        try:
            response = self._http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise SandboxUnavailable(
                f"The sandbox at {self._base} did not answer ({type(exc).__name__})."
            ) from exc
        if response.status_code >= 400:
            raise SandboxUnavailable(_error_text(response))
        try:
            return response.json()
        except ValueError as exc:
            raise SandboxUnavailable(
                f"The sandbox at {self._base} answered something else."
            ) from exc

    def verify(self) -> None:
        """Raise :class:`DemoRefused` unless the server names itself the offline sandbox."""
        try:
            health = self._call("GET", "health")
        except SandboxUnavailable as exc:
            raise DemoRefused(
                f"Demo mode needs the offline sandbox at MONEYKIT_BASE_URL ({self._base}), and "
                f"it did not answer as one: {exc}"
            ) from exc
        if not isinstance(health, dict) or health.get("service") != SANDBOX_SERVICE:
            raise DemoRefused(
                f"The server at {self._base} is not the offline sandbox; demo mode is refused."
            )

    def reset(self, *, seed: int, demo_links: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "reset", {"seed": seed, "demo_links": demo_links}
        )
        return result

    def set_rate_limits(self, enabled: bool) -> None:
        self._call("POST", "rate-limits", {"enabled": enabled})

    def scenarios(self) -> tuple[list[ScenarioInfo], list[ScenarioRunInfo]]:
        body = self._call("GET", "scenarios")
        available = [ScenarioInfo(**item) for item in body.get("scenarios", [])]
        runs = [ScenarioRunInfo(**item) for item in body.get("runs", [])]
        return available, runs

    def start_scenario(
        self, name: str, *, institution_id: str | None = None, speed: float = 1.0
    ) -> ScenarioRunInfo:
        body: dict[str, Any] = {"speed": speed}
        if institution_id:
            body["institution_id"] = institution_id
        return ScenarioRunInfo(**self._call("POST", f"scenarios/{name}", body))

    def stop_scenarios(self) -> int:
        return int(self._call("DELETE", "scenarios").get("stopped", 0))


def _error_text(response: httpx.Response) -> str:
    """A readable reason from a sandbox error body (MoneyKit's error shape), never the raw body."""
    try:
        body = response.json()
    except ValueError:
        return f"The sandbox answered HTTP {response.status_code}."
    if isinstance(body, dict):
        details = body.get("validation_errors")
        if isinstance(details, list) and details and isinstance(details[0], dict):
            message = details[0].get("message")
            if isinstance(message, str):
                return message[:300]
        message = body.get("error_message") or body.get("detail")
        if isinstance(message, str):
            return message[:300]
    return f"The sandbox answered HTTP {response.status_code}."
