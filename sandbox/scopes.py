"""Access-token scopes: which scope each REST endpoint needs.

MoneyKit grants a token the scopes asked for at ``/auth/token`` (space-separated) or, when none are
asked for, every scope the app has. The scope names are the ones MoneyKit's introspection shows;
which endpoint needs which is the sandbox's own reading (MoneyKit does not publish the table).
"""

from __future__ import annotations

import re

from sandbox import errors

APP_SCOPES = (
    "accounts:read",
    "link_session:write",
    "links:read",
    "links:write",
    "institutions:read",
)

# (method, path pattern, scope). First match wins; paths not listed need no particular scope.
_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(pattern), scope)
    for method, pattern, scope in (
        ("POST", r"^/link-session(/exchange-token)?$", "link_session:write"),
        ("GET", r"^/institutions(/[^/]+)?$", "institutions:read"),
        ("GET", r"^/links(/[^/]+)?$", "links:read"),
        ("GET", r"^/users/[^/]+/links$", "links:read"),
        ("GET", r"^/links/[^/]+/.+$", "accounts:read"),
        ("GET", r"^/users/[^/]+/.+$", "accounts:read"),
        ("POST", r"^/links/.+$", "links:write"),
        ("PATCH", r"^/links/[^/]+$", "links:write"),
        ("DELETE", r"^/links/[^/]+$", "links:write"),
        ("POST", r"^/webhooks/test/.+$", "links:write"),
    )
)


def parse_requested(scope: str | None) -> str:
    """The scope string to grant for a token request; unknown scope names are refused."""
    if scope is None or not scope.strip():
        return " ".join(APP_SCOPES)
    asked = scope.split()
    unknown = [name for name in asked if name not in APP_SCOPES]
    if unknown:
        raise errors.unauthorized(
            f"Scope not allowed for this app: {' '.join(unknown)}.", status=400
        )
    return " ".join(dict.fromkeys(asked))


def required_scope(method: str, path: str) -> str | None:
    for rule_method, pattern, scope in _RULES:
        if rule_method == method and pattern.match(path):
            return scope
    return None


def check(granted: str, method: str, path: str) -> None:
    needed = required_scope(method, path)
    if needed is not None and needed not in granted.split():
        raise errors.MoneyKitError(
            403,
            "api_error.auth.insufficient_scope",
            f"This access token lacks the '{needed}' scope.",
        )
