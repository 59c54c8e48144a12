"""MoneyKit's auth area: client credentials, access tokens and their scopes."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from sandbox import errors
from sandbox.models import AccessToken

ACCESS_TOKEN_TTL_SECONDS = 3600


class AuthBackend:
    """Issues and checks bearer tokens for the one client the sandbox knows."""

    def __init__(self, client_id: str, client_secret: str, clock: Callable[[], datetime]) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self.access_tokens: dict[str, AccessToken] = {}

    def issue_access_token(
        self, client_id: str | None, client_secret: str | None, scope: str
    ) -> tuple[str, int]:
        if not client_id or not client_secret:
            raise errors.unauthorized("Missing client credentials.", status=400)
        id_ok = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self._client_secret.encode())
        if not (id_ok and secret_ok):
            raise errors.unauthorized("Invalid client credentials.")
        token = f"mkat_{secrets.token_urlsafe(32)}"
        expires = self._clock() + timedelta(seconds=ACCESS_TOKEN_TTL_SECONDS)
        self.access_tokens[token] = AccessToken(expires_at=expires, scope=scope)
        self._forget_expired_tokens()
        return token, ACCESS_TOKEN_TTL_SECONDS

    def _forget_expired_tokens(self) -> None:
        # Keep recently expired tokens so they still answer "expired" rather than "unknown".
        horizon = self._clock() - timedelta(days=1)
        for token in [t for t, a in self.access_tokens.items() if a.expires_at < horizon]:
            del self.access_tokens[token]

    def authenticate(self, authorization: str | None) -> AccessToken:
        if not authorization:
            raise errors.unauthorized("Missing bearer token.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.unauthorized("Authorization header must be a bearer token.")
        access = self.access_tokens.get(token.strip())
        if access is None:
            raise errors.unauthorized("Invalid access token.")
        if access.expires_at <= self._clock():
            raise errors.expired_access_token()
        return access
