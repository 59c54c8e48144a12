"""One exception per way a MoneyKit call can fail.

``str()`` of every error is safe to log and show: status, MoneyKit's error code, its short message
and the request id. The raw response body is never part of it: vendor bodies can echo tokens.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "GoneError",
    "InternalServerError",
    "LinkBadStateError",
    "MoneyKitError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
]

# MoneyKit's own messages are short sentences; anything longer is not theirs and is cut.
_MAX_MESSAGE_CHARS = 200


def _short(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE_CHARS:
        return text[: _MAX_MESSAGE_CHARS - 1] + "…"
    return text


class MoneyKitError(Exception):
    """Root of every error raised by ``linkdesk.moneykit``."""

    @property
    def user_message(self) -> str:
        """A short sentence safe to show staff."""
        return "MoneyKit request failed."


class APIError(MoneyKitError):
    message: str
    request: httpx.Request | None

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request

    def __str__(self) -> str:
        return self.message


class APIStatusError(APIError):
    """MoneyKit answered with a non-success status."""

    status_code: int
    error_code: str | None
    error_message: str | None
    request_id: str | None

    def __init__(
        self,
        *,
        status_code: int,
        error_code: str | None = None,
        error_message: str | None = None,
        request_id: str | None = None,
        request: httpx.Request | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        self.status_code = status_code
        self.error_code = error_code
        self.error_message = _short(error_message)
        self.request_id = request_id
        self.response = response
        parts = [f"MoneyKit returned HTTP {status_code}"]
        if error_code:
            parts.append(f"({error_code})")
        text = " ".join(parts)
        if self.error_message:
            text += f": {self.error_message}"
        if request_id:
            text += f" [request id {request_id}]"
        super().__init__(text, request=request)

    @property
    def user_message(self) -> str:
        text = self.error_message or f"MoneyKit returned HTTP {self.status_code}."
        if self.request_id:
            text += f" (request id {self.request_id})"
        return text


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    @property
    def user_message(self) -> str:
        return "MoneyKit rejected Linkdesk's credentials; check the client id and secret."


class PermissionDeniedError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class ConflictError(APIStatusError):
    pass


class GoneError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class LinkBadStateError(UnprocessableEntityError):
    """422 ``link_error.bad_state``: the link must be repaired (usually relinked) first."""

    link_error_code: str | None

    def __init__(self, *, link_error_code: str | None = None, **kwargs: Any) -> None:
        self.link_error_code = link_error_code
        super().__init__(**kwargs)


class RateLimitError(APIStatusError):
    """429; ``retry_after`` is MoneyKit's hint in seconds (None when absent or unusable)."""

    retry_after: float | None

    def __init__(self, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(**kwargs)

    @property
    def user_message(self) -> str:
        return "MoneyKit is rate limiting Linkdesk; try again shortly."


class InternalServerError(APIStatusError):
    @property
    def user_message(self) -> str:
        return "MoneyKit had an internal error; try again shortly."


class APIConnectionError(APIError):
    def __init__(
        self, message: str = "Could not reach MoneyKit.", *, request: httpx.Request | None = None
    ) -> None:
        super().__init__(message, request=request)

    @property
    def user_message(self) -> str:
        return "MoneyKit could not be reached."


class APITimeoutError(APIConnectionError):
    def __init__(self, *, request: httpx.Request | None = None) -> None:
        super().__init__("MoneyKit request timed out.", request=request)

    @property
    def user_message(self) -> str:
        return "MoneyKit did not answer in time."


class APIResponseValidationError(APIError):
    """The response had a success status but not the JSON or shape MoneyKit documents."""

    def __init__(
        self,
        message: str = "MoneyKit returned a response Linkdesk could not read.",
        *,
        request: httpx.Request | None = None,
        status_code: int | None = None,
    ) -> None:
        self.status_code = status_code
        super().__init__(message, request=request)

    @property
    def user_message(self) -> str:
        return "MoneyKit returned an unexpected response."


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status_code: int, error_code: str | None) -> type[APIStatusError]:
    """Pick the class for a status (and, for the shared 422, the error code)."""
    if status_code == 422 and error_code == "link_error.bad_state":
        return LinkBadStateError
    if status_code >= 500:
        return InternalServerError
    return _BY_STATUS.get(status_code, APIStatusError)
