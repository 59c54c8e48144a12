"""Check that a webhook really comes from MoneyKit (protocol doc §5.3).

The ``MoneyKit-Signature`` header is an ES256 JWT over a hash of the raw body. The checks, in
order: the header is there and parses; its algorithm is exactly ES256 and it names a ``kid``; the
``kid`` is a key of MoneyKit's JWKS; the signature verifies with that key; ``iat`` is no older
than five minutes and not in the future (there is no ``exp``); ``request_body_sha256`` equals the
SHA-256 of the exact bytes received; ``iss`` matches when an issuer is configured.

Every refusal names its reason, so the deliveries log says *why* a request was turned away.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt

__all__ = [
    "JwksCache",
    "JwksUnavailable",
    "Reason",
    "Verdict",
    "WebhookVerifier",
    "body_sha256",
]

logger = logging.getLogger("linkdesk.webhooks")

ALGORITHM = "ES256"
JWKS_PATH = "/.well-known/jwks.json"
_MAX_HEADER_CHARS = 8192


class Reason(enum.StrEnum):
    OK = "ok"
    MISSING_SIGNATURE = "missing_signature"
    MALFORMED = "malformed"
    BAD_ALG = "bad_alg"
    MISSING_KID = "missing_kid"
    UNKNOWN_KID = "unknown_kid"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"
    FUTURE = "future"
    BODY_MISMATCH = "body_mismatch"
    BAD_ISSUER = "bad_issuer"
    JWKS_UNAVAILABLE = "jwks_unavailable"
    # Set by the receiver, not the verifier:
    BAD_PAYLOAD = "bad_payload"
    DUPLICATE = "duplicate"
    TOO_LARGE = "too_large"


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: Reason
    kid: str | None = None
    issued_at: datetime | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK


class JwksUnavailable(Exception):
    """MoneyKit's keys could not be fetched (the sender should retry later)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def body_sha256(raw_body: bytes) -> str:
    return hashlib.sha256(raw_body).hexdigest()


class JwksCache:
    """MoneyKit's public signing keys by ``kid``.

    Keys are kept for ``max_age`` (12 h by default, MoneyKit advises at most about a day). An
    unknown ``kid`` causes a refetch, since keys rotate, but no more often than ``min_refetch``
    (5 min), so a stream of forged kids cannot turn Linkdesk into a load generator.
    """

    def __init__(
        self,
        url: str,
        *,
        http_client: httpx.Client | None = None,
        clock: Callable[[], datetime] | None = None,
        max_age: timedelta = timedelta(hours=12),
        min_refetch: timedelta = timedelta(minutes=5),
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._http = http_client
        self._owns_http = http_client is None
        self._clock = clock or _utcnow
        self._max_age = max_age
        self._min_refetch = min_refetch
        self._timeout = timeout
        self._keys: dict[str, Any] = {}
        self._fetched_at: datetime | None = None
        self._attempted_at: datetime | None = None
        self._lock = threading.Lock()
        self.fetches = 0

    @classmethod
    def for_base_url(cls, base_url: str, **kwargs: Any) -> JwksCache:
        return cls(base_url.rstrip("/") + JWKS_PATH, **kwargs)

    def close(self) -> None:
        if self._owns_http and self._http is not None:
            self._http.close()

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self._timeout)
        return self._http

    def _fetch(self, now: datetime) -> None:
        """Replace the keys with a fresh copy; raises JwksUnavailable (keeping the old keys)."""
        self._attempted_at = now
        self.fetches += 1
        try:
            response = self._client().get(self.url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("webhook keys could not be fetched (%s)", type(exc).__name__)
            raise JwksUnavailable("MoneyKit's signing keys could not be fetched") from exc
        keys: dict[str, Any] = {}
        entries = document.get("keys") if isinstance(document, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            kid = entry.get("kid")
            usable = (
                isinstance(kid, str)
                and kid
                and entry.get("kty") == "EC"
                and entry.get("crv") == "P-256"
                and entry.get("use", "sig") == "sig"
                and entry.get("alg", ALGORITHM) == ALGORITHM
            )
            if not usable:
                continue
            try:
                keys[str(kid)] = jwt.PyJWK(entry, algorithm=ALGORITHM).key
            except (jwt.PyJWKError, ValueError, TypeError):
                logger.warning("ignoring an unreadable signing key %r", kid)
        self._keys = keys
        self._fetched_at = now
        logger.info("webhook signing keys fetched: %d usable", len(keys))

    def key(self, kid: str) -> Any | None:
        """The public key for ``kid``, or None when MoneyKit does not publish it.

        Raises :class:`JwksUnavailable` when no usable copy of the keys exists at all.
        """
        with self._lock:
            now = self._clock()
            expired = self._fetched_at is None or now - self._fetched_at >= self._max_age
            recently = self._attempted_at is not None and now - self._attempted_at < (
                self._min_refetch
            )
            if expired:
                # Past their lifetime the old keys are not trusted any more.
                self._keys = {}
                if recently:
                    # A fetch just failed: answer "try later" without asking MoneyKit again.
                    raise JwksUnavailable("MoneyKit's signing keys are not available")
                self._fetch(now)
                return self._keys.get(kid)
            if kid in self._keys:
                return self._keys[kid]
            if recently:
                return None
            try:
                self._fetch(now)
            except JwksUnavailable:
                return None
            return self._keys.get(kid)


class WebhookVerifier:
    def __init__(
        self,
        jwks: JwksCache,
        *,
        clock: Callable[[], datetime] | None = None,
        issuer: str | None = None,
        max_age: timedelta = timedelta(minutes=5),
        max_skew: timedelta = timedelta(seconds=60),
    ) -> None:
        self._jwks = jwks
        self._clock = clock or _utcnow
        self._issuer = issuer or None
        self._max_age = max_age
        self._max_skew = max_skew

    def verify(self, raw_body: bytes, signature: str | None) -> Verdict:
        """The verdict for one request: its raw body and its ``MoneyKit-Signature`` header."""
        if signature is None or not signature.strip():
            return Verdict(Reason.MISSING_SIGNATURE)
        token = signature.strip()
        if len(token) > _MAX_HEADER_CHARS:
            return Verdict(Reason.MALFORMED)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return Verdict(Reason.MALFORMED)
        # Decided from the header before any key is touched: "none", HS256 (keyed with our public
        # key) and RS256 are refused here, whatever the library would do with them.
        if header.get("alg") != ALGORITHM:
            return Verdict(Reason.BAD_ALG)
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            return Verdict(Reason.MISSING_KID)
        try:
            key = self._jwks.key(kid)
        except JwksUnavailable:
            return Verdict(Reason.JWKS_UNAVAILABLE, kid=kid)
        if key is None:
            return Verdict(Reason.UNKNOWN_KID, kid=kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                # Time is checked below with the injected clock; MoneyKit sends no exp/aud.
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
        except jwt.InvalidSignatureError:
            return Verdict(Reason.BAD_SIGNATURE, kid=kid)
        except jwt.PyJWTError:
            return Verdict(Reason.MALFORMED, kid=kid)
        if not isinstance(claims, dict):
            return Verdict(Reason.MALFORMED, kid=kid)

        iat = claims.get("iat")
        if isinstance(iat, bool) or not isinstance(iat, int | float):
            return Verdict(Reason.MALFORMED, kid=kid)
        try:
            issued_at = datetime.fromtimestamp(float(iat), UTC)
        except (OverflowError, OSError, ValueError):
            return Verdict(Reason.MALFORMED, kid=kid)
        now = self._clock()
        if now - issued_at > self._max_age:
            return Verdict(Reason.STALE, kid=kid, issued_at=issued_at)
        if issued_at - now > self._max_skew:
            return Verdict(Reason.FUTURE, kid=kid, issued_at=issued_at)

        claimed = claims.get("request_body_sha256")
        if not isinstance(claimed, str):
            return Verdict(Reason.MALFORMED, kid=kid, issued_at=issued_at)
        if not hmac.compare_digest(claimed.lower().encode(), body_sha256(raw_body).encode()):
            return Verdict(Reason.BODY_MISMATCH, kid=kid, issued_at=issued_at)
        if self._issuer is not None and claims.get("iss") != self._issuer:
            return Verdict(Reason.BAD_ISSUER, kid=kid, issued_at=issued_at)
        return Verdict(Reason.OK, kid=kid, issued_at=issued_at, claims=claims)
