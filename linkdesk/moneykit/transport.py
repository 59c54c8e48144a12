"""The transport under every MoneyKit call: credentials and the cached access token, retries
with jittered exponential backoff that honours ``Retry-After``, one exception class per failure
kind, and validation of every response into its model. The endpoint groups
(:mod:`.api_links`, :mod:`.api_link_data`, :mod:`.api_institutions`) add only requests.
"""

from __future__ import annotations

import copy
import dataclasses
import email.utils
import enum
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx
import pydantic
from pydantic import SecretStr

from linkdesk.moneykit.errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    LinkBadStateError,
    RateLimitError,
    status_error_class,
)
from linkdesk.moneykit.images import ImagePolicy
from linkdesk.moneykit.models import (
    AccessToken,
    AppClient,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_SYNC_SIZE",
    "DEFAULT_TIMEOUT",
    "INITIAL_RETRY_DELAY",
    "LINKS_PAGE_MAX",
    "LINKS_PAGE_MIN",
    "MAX_RETRY_AFTER",
    "MAX_RETRY_DELAY",
    "PAGE_SIZE_MAX",
    "SYNC_SIZE_MAX",
    "TOKEN_REFRESH_MARGIN",
    "UNSET",
    "RequestEvent",
    "Transport",
    "Unset",
    "endpoint_template",
    "parse_retry_after",
]

logger = logging.getLogger("linkdesk.moneykit")

DEFAULT_BASE_URL = "https://api.moneykit.com"
API_VERSION = "2023-02-18"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
# A server hint beyond this is not obeyed: a dashboard must not hang for ten minutes on one call.
MAX_RETRY_AFTER = 60.0
# Refresh the token this long before MoneyKit says it expires (capped at a tenth of its lifetime).
TOKEN_REFRESH_MARGIN = 60.0
LINKS_PAGE_MIN, LINKS_PAGE_MAX = 500, 5000
PAGE_SIZE_MAX = 1000  # transactions, investment transactions, user transactions
SYNC_SIZE_MAX = 500
DEFAULT_SYNC_SIZE = 100

_USER_AGENT = "linkdesk/0.1 (+httpx)"
_RETRY_STATUSES = frozenset({408, 409, 429})

_M = TypeVar("_M", bound=pydantic.BaseModel)


class _Retry(enum.Enum):
    # Safe to repeat: the server may have processed the request already and nothing bad happens.
    ALWAYS = "always"
    # Not safe to repeat once the server may have seen it (token exchange): retry only answers that
    # say the request was not processed, and failures to connect at all.
    UNSENT_ONLY = "unsent_only"


class Unset(enum.Enum):
    """Marks an argument that was not passed, where ``None`` has a meaning of its own."""

    UNSET = "unset"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset.UNSET


def parse_retry_after(
    headers: Mapping[str, str] | httpx.Headers | None, *, now: float | None = None
) -> float | None:
    """Seconds the server asks us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be delta-seconds (floats tolerated) or an HTTP date. Returns None when
    absent or unreadable; the value may be zero or negative for a date in the past.
    """
    if headers is None:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000.0
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(raw)
    if parsed is None:
        return None
    moment = email.utils.mktime_tz(parsed)
    return float(moment - (time.time() if now is None else now))


@dataclasses.dataclass(frozen=True, slots=True)
class RequestEvent:
    """One HTTP attempt, told to the client's observers (metrics): no URL values, no body."""

    method: str
    endpoint: str  # the path template, e.g. /links/{id}/accounts
    status: str  # the HTTP status code, or "error" when no response came back
    seconds: float
    retrying: bool  # another attempt follows this one


# Path segments that name a thing (an id) when they follow one of these collections.
_ID_AFTER = frozenset({"links", "users", "accounts", "institutions", "link", "link-session"})
_LITERAL_SEGMENTS = frozenset({"import", "numbers", "sync", "test", "token", "introspect"})


def endpoint_template(path: str) -> str:
    """``/links/lnk_123/accounts`` → ``/links/{id}/accounts``: few label values for metrics."""
    out: list[str] = []
    previous = ""
    for segment in path.split("?")[0].split("/"):
        if previous in _ID_AFTER and segment and segment not in _LITERAL_SEGMENTS:
            out.append("{id}")
        else:
            out.append(segment)
        previous = segment
    return "/".join(out)


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _ids(values: Sequence[str] | None) -> list[str] | None:
    # httpx repeats the key for a list (``?account_ids=a&account_ids=b``), as MoneyKit expects.
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError("pass a sequence of ids, not a single string")
    return list(values) or None


def _day(value: date | None) -> str | None:
    if value is None:
        return None
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def _paging(
    page: int | None, size: int | None, start_date: date | None, end_date: date | None
) -> dict[str, Any]:
    # Checked here as MoneyKit's SDK does: a bad value would only come back as a 422.
    if page is not None and page < 1:
        raise ValueError("page must be 1 or more.")
    if size is not None and not 1 <= size <= PAGE_SIZE_MAX:
        raise ValueError(f"size must be between 1 and {PAGE_SIZE_MAX}.")
    return {
        "page": page,
        "size": size,
        "start_date": _day(start_date),
        "end_date": _day(end_date),
    }


class Transport:
    """What every MoneyKit call goes through (version ``2023-02-18``): credentials and the access
    token, retries with backoff, errors, response validation. The endpoint groups build on it.

    Credentials and base URL are taken from the arguments; only when an argument is not passed is
    the environment consulted (``MONEYKIT_CLIENT_ID``, ``MONEYKIT_CLIENT_SECRET``,
    ``MONEYKIT_BASE_URL``), and the base URL finally defaults to ``https://api.moneykit.com``.
    """

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | SecretStr | None = None,
        base_url: str | None = None,
        http_client: httpx.Client | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float | httpx.Timeout | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        image_policy: ImagePolicy | None = None,
        scope: str | None = None,
    ) -> None:
        if client_id is None:
            client_id = os.environ.get("MONEYKIT_CLIENT_ID")
        if client_secret is None:
            client_secret = os.environ.get("MONEYKIT_CLIENT_SECRET")
        if not client_id or not client_secret:
            raise ValueError(
                "MoneyKit credentials missing: pass client_id and client_secret or set "
                "MONEYKIT_CLIENT_ID and MONEYKIT_CLIENT_SECRET."
            )
        if max_retries is None or not isinstance(max_retries, int) or max_retries < 0:
            raise TypeError("max_retries must be an int >= 0; pass 0 to turn retries off.")
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise TypeError(
                f"http_client must be an httpx.Client, got {type(http_client).__name__}."
            )
        self.client_id = client_id
        # Space-separated scopes asked for at /auth/token; None asks for none, which MoneyKit
        # documents as "every action allowed for your application" (what Linkdesk uses).
        self.scope = " ".join(scope.split()) if scope else None
        self._secret = (
            client_secret if isinstance(client_secret, SecretStr) else SecretStr(client_secret)
        )
        self.base_url = (
            base_url or os.environ.get("MONEYKIT_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self.max_retries = max_retries
        # Which hosts institution images may come from (see linkdesk.moneykit.images); by
        # default MoneyKit's own hosts and this client's base URL.
        self.image_policy = image_policy or ImagePolicy.for_moneykit(None, base_url=self.base_url)
        self._owns_http = http_client is None
        if http_client is None:
            self._timeout: float | httpx.Timeout | Any = (
                timeout if timeout is not None else DEFAULT_TIMEOUT
            )
            self._http = httpx.Client(timeout=self._timeout)
        else:
            # An injected client keeps its own timeout unless one is passed explicitly.
            self._timeout = timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT
            self._http = http_client
        self._clock = clock or time.time
        self._sleep = sleep or time.sleep
        self._random = random.random
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._token_expires_at = 0.0
        # Called after every HTTP attempt (metrics); shared with with_options() copies.
        self.observers: list[Callable[[RequestEvent], None]] = []

    def _tell(self, method: str, path: str, status: str, started: float, retrying: bool) -> None:
        if not self.observers:
            return
        event = RequestEvent(
            method, endpoint_template(path), status, time.perf_counter() - started, retrying
        )
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                logger.exception("moneykit request observer failed")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, client_id={self.client_id!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP pool if this client created it (an injected one belongs to the caller)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- access token ------------------------------------------------------------------------

    def _access_token(self) -> str:
        with self._token_lock:
            if self._token is not None and self._clock() < self._token_expires_at:
                return self._token
            form = {"grant_type": "client_credentials"}
            if self.scope:
                form["scope"] = self.scope
            response = self._send(
                "POST",
                "/auth/token",
                data={
                    **form,
                    "client_id": self.client_id,
                    "client_secret": self._secret.get_secret_value(),
                },
                authenticated=False,
                retry=_Retry.ALWAYS,
            )
            token = self._parse(response, AccessToken)
            lifetime = max(float(token.expires_in), 0.0)
            margin = min(TOKEN_REFRESH_MARGIN, lifetime / 10)
            self._token = token.access_token
            self._token_expires_at = self._clock() + lifetime - margin
            logger.debug("moneykit: new access token, valid for %.0f s", lifetime)
            return self._token

    def invalidate_token(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is still ``token``, when given)."""
        with self._token_lock:
            if token is None or token == self._token:
                self._token = None
                self._token_expires_at = 0.0

    def introspect(self) -> AppClient:
        """``GET /auth/introspect``: the client and application behind the credentials."""
        return self._parse(self._send("GET", "/auth/introspect"), AppClient)

    # -- transport ---------------------------------------------------------------------------

    def _retry_delay(self, retries_taken: int, headers: httpx.Headers | None) -> float:
        hint = parse_retry_after(headers, now=self._clock())
        if hint is not None and 0 < hint <= MAX_RETRY_AFTER:
            return hint
        exponent = min(retries_taken, 30)  # keeps 2**n finite however many retries are set
        base = min(INITIAL_RETRY_DELAY * (2.0**exponent), MAX_RETRY_DELAY)
        return max(base * (1 - 0.25 * self._random()), 0.0)

    @staticmethod
    def _exception_retryable(exc: httpx.TransportError, retry: _Retry) -> bool:
        if retry is _Retry.ALWAYS:
            return True
        # These fail before the request leaves the machine, so the server cannot have acted on it.
        return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)

    @staticmethod
    def _status_retryable(response: httpx.Response, retry: _Retry) -> bool:
        hint = response.headers.get("x-should-retry")
        if hint == "true":
            return True
        if hint == "false":
            return False
        if retry is _Retry.UNSENT_ONLY:
            return response.status_code in (408, 429)
        return response.status_code in _RETRY_STATUSES or response.status_code >= 500

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        authenticated: bool = True,
        retry: _Retry = _Retry.ALWAYS,
        retry_rate_limit: bool = True,
    ) -> httpx.Response:
        url = self.base_url + path
        retries_taken = 0
        refreshed_after_401 = False
        clean_params = {k: v for k, v in (params or {}).items() if v is not None}
        while True:
            headers = {
                "Accept": "application/json",
                "MoneyKit-Version": API_VERSION,
                "User-Agent": _USER_AGENT,
            }
            token: str | None = None
            if authenticated:
                token = self._access_token()
                headers["Authorization"] = f"Bearer {token}"
            started = time.perf_counter()
            try:
                response = self._http.request(
                    method,
                    url,
                    params=clean_params or None,
                    json=json,
                    data=data,
                    headers=headers,
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                will_retry = retries_taken < self.max_retries and self._exception_retryable(
                    exc, retry
                )
                self._tell(method, path, "error", started, will_retry)
                if will_retry:
                    delay = self._retry_delay(retries_taken, None)
                    logger.debug(
                        "moneykit: %s %s failed (%s), retrying in %.2f s",
                        method,
                        path,
                        type(exc).__name__,
                        delay,
                    )
                    retries_taken += 1
                    self._sleep(delay)
                    continue
                if isinstance(exc, httpx.TimeoutException):
                    raise APITimeoutError(request=exc.request) from exc
                raise APIConnectionError(request=exc.request) from exc

            logger.debug("moneykit: %s %s -> %s", method, path, response.status_code)
            if response.is_success:
                self._tell(method, path, str(response.status_code), started, False)
                return response
            retry_401 = response.status_code == 401 and authenticated and not refreshed_after_401
            retryable = self._status_retryable(response, retry) and (
                retry_rate_limit or response.status_code != 429
            )
            self._tell(
                method,
                path,
                str(response.status_code),
                started,
                retry_401 or (retries_taken < self.max_retries and retryable),
            )
            if retry_401:
                # The token may have been revoked or expired early: fetch a new one, once.
                refreshed_after_401 = True
                response.close()
                self.invalidate_token(token)
                continue
            if retries_taken < self.max_retries and retryable:
                delay = self._retry_delay(retries_taken, response.headers)
                logger.debug(
                    "moneykit: %s %s -> %s, retrying in %.2f s",
                    method,
                    path,
                    response.status_code,
                    delay,
                )
                response.close()
                retries_taken += 1
                self._sleep(delay)
                continue
            raise self._status_error(response)

    def _status_error(self, response: httpx.Response) -> APIStatusError:
        body: Any = None
        try:
            response.read()
            body = response.json()
        except (ValueError, httpx.HTTPError):
            body = None
        error_code = error_message = link_error_code = None
        body_request_id = None
        if isinstance(body, dict):
            error_code = body.get("error_code") if isinstance(body.get("error_code"), str) else None
            raw_message = body.get("error_message")
            error_message = raw_message if isinstance(raw_message, str) else None
            raw_link_code = body.get("link_error_code")
            link_error_code = raw_link_code if isinstance(raw_link_code, str) else None
            raw_request_id = body.get("request_id")
            body_request_id = raw_request_id if isinstance(raw_request_id, str) else None
        request_id = (
            response.headers.get("x-request-id")
            or response.headers.get("request-id")
            or body_request_id
        )
        cls = status_error_class(response.status_code, error_code)
        common: dict[str, Any] = {
            "status_code": response.status_code,
            "error_code": error_code,
            "error_message": error_message,
            "request_id": request_id,
            "request": response.request,
            "response": response,
        }
        if cls is LinkBadStateError:
            return LinkBadStateError(link_error_code=link_error_code, **common)
        if cls is RateLimitError:
            hint = parse_retry_after(response.headers, now=self._clock())
            return RateLimitError(retry_after=hint if hint and hint > 0 else None, **common)
        return cls(**common)

    @staticmethod
    def _parse(response: httpx.Response, model: type[_M], *, transform: Any = None) -> _M:
        try:
            payload = response.json()
        except ValueError as exc:
            raise APIResponseValidationError(
                f"MoneyKit returned invalid JSON (HTTP {response.status_code}).",
                request=response.request,
                status_code=response.status_code,
            ) from exc
        if transform is not None:
            payload = transform(payload)
        try:
            return model.model_validate(payload)
        except pydantic.ValidationError as exc:
            # Name the fields only: the offending values may be tokens.
            where = sorted(
                {".".join(str(p) for p in err["loc"]) or "<root>" for err in exc.errors()}
            )
            raise APIResponseValidationError(
                f"MoneyKit response did not match {model.__name__} at: {', '.join(where[:5])}.",
                request=response.request,
                status_code=response.status_code,
            ) from exc

    def with_options(self, *, max_retries: int | None = None) -> Self:
        """A client sharing this one's connection pool, with other options (e.g. no retries)."""
        other = copy.copy(self)
        other._owns_http = False
        other._token_lock = threading.Lock()
        if max_retries is not None:
            if not isinstance(max_retries, int) or max_retries < 0:
                raise TypeError("max_retries must be an int >= 0; pass 0 to turn retries off.")
            other.max_retries = max_retries
        return other
