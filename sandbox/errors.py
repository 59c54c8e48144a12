"""MoneyKit's error body and the errors the sandbox raises.

Every REST error is ``{error_code, error_message}`` with the status MoneyKit uses for that code
(protocol doc §3.6). ``link_error.bad_state`` adds ``link_error_code``; validation failures add
``validation_errors``. Handlers raise :class:`MoneyKitError`; one exception handler renders it.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class MoneyKitError(Exception):
    """An error rendered in MoneyKit's own shape."""

    def __init__(
        self,
        status: int,
        error_code: str,
        error_message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error_code}: {error_message}")
        self.status = status
        self.error_code = error_code
        self.error_message = error_message
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "error_message": self.error_message, **self.extra}


def unauthorized(message: str, *, status: int = 401) -> MoneyKitError:
    return MoneyKitError(status, "api_error.auth.unauthorized", message)


def expired_access_token() -> MoneyKitError:
    return MoneyKitError(401, "api_error.auth.expired_access_token", "Access token expired")


def validation_failed(errors: list[dict[str, Any]]) -> MoneyKitError:
    return MoneyKitError(
        422,
        "api_error.request.validation_failed",
        "Request validation error",
        extra={"validation_errors": errors},
    )


def validation_error(location: list[str | int], message: str, kind: str) -> MoneyKitError:
    return validation_failed([{"location": location, "message": message, "type": kind}])


def rate_limited(wait_s: float) -> MoneyKitError:
    return MoneyKitError(
        429,
        "api_error.rate_limit_exceeded",
        "Rate limit exceeded",
        headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
    )


def link_not_found() -> MoneyKitError:
    return MoneyKitError(404, "link_error.not_found", "Link not found.")


def link_deleted() -> MoneyKitError:
    return MoneyKitError(410, "link_error.deleted", "This link was deleted at some earlier time.")


def link_bad_state(link_error_code: str | None, message: str) -> MoneyKitError:
    # The SDK's LinkErrorBadStateResponse requires a code: a link with no error yet (still being
    # connected, or awaiting its token exchange) is ``incomplete`` in MoneyKit's PublicLinkError.
    return MoneyKitError(
        422,
        "link_error.bad_state",
        message,
        extra={"link_error_code": link_error_code or "incomplete"},
    )


def invalid_token_exchange(message: str) -> MoneyKitError:
    return MoneyKitError(400, "link_session_error.invalid_token_exchange", message)


def forbidden_config(message: str) -> MoneyKitError:
    return MoneyKitError(403, "link_session_error.forbidden_config", message)


SUPPORTED_API_VERSIONS = ("2023-02-18",)


def unsupported_api_version(value: str) -> MoneyKitError:
    return validation_error(
        ["header", "MoneyKit-Version"],
        f"Unsupported API version; supported: {', '.join(SUPPORTED_API_VERSIONS)}",
        "enum",
    )


def route_not_found() -> MoneyKitError:
    return MoneyKitError(404, "api_error.not_found", "Not Found")


def method_not_allowed() -> MoneyKitError:
    return MoneyKitError(405, "api_error.method_not_allowed", "Method Not Allowed")


def institution_not_found() -> MoneyKitError:
    return MoneyKitError(404, "institution_error.not_found", "Institution not found")


async def moneykit_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MoneyKitError)
    body = exc.body()
    # The same id goes out in the X-Request-Id header (set by the middleware).
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


class ConnectError(Exception):
    """A failure inside the hosted Connect flow, shaped like the launcher's ``LinkExitError``.

    ``error_id`` and ``displayed_message`` are what the UI shows and later hands to ``onExit``.
    """

    def __init__(self, status: int, error_id: str, displayed_message: str) -> None:
        super().__init__(f"{error_id}: {displayed_message}")
        self.status = status
        self.error_id = error_id
        self.displayed_message = displayed_message
        self.request_id = f"req_{secrets.token_hex(10)}"

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "error_id": self.error_id,
                "displayed_message": self.displayed_message,
                "request_id": self.request_id,
            }
        }


async def connect_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConnectError)
    return JSONResponse(exc.body(), status_code=exc.status, headers={"Cache-Control": "no-store"})
