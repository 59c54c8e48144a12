"""Redirect URIs registered for the client, as MoneyKit checks them at ``POST /link-session``.

An entry is an exact URL, or one with ``*`` as its port (any port: tests run dashboards on free
ports). A ``redirect_uri`` must match an entry and carry no query string or fragment, or the
session is refused with 403 ``link_session_error.forbidden_config``.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from sandbox import errors

# Linkdesk's own OAuth return page on a local dashboard.
DEFAULT_REDIRECT_URIS = (
    "http://localhost:*/oauth_return",
    "http://127.0.0.1:*/oauth_return",
)


class RedirectUris:
    def __init__(self, allowed: Iterable[str] | None = None) -> None:
        self.allowed = tuple(allowed) if allowed is not None else DEFAULT_REDIRECT_URIS

    def check(self, uri: str) -> None:
        parts = urlsplit(uri)
        if parts.query or parts.fragment or "?" in uri:
            raise errors.forbidden_config("redirect_uri must not carry a query string.")
        if not any(_matches(entry, uri) for entry in self.allowed):
            raise errors.forbidden_config("redirect_uri is not registered for this app.")


def _matches(entry: str, uri: str) -> bool:
    if ":*/" not in entry and not entry.endswith(":*"):
        return entry == uri
    want, got = urlsplit(entry.replace(":*", ":1", 1)), urlsplit(uri)
    try:
        port_ok = got.port is not None
    except ValueError:
        return False
    return (
        port_ok
        and want.scheme == got.scheme
        and want.hostname == got.hostname
        and (want.path or "/") == (got.path or "/")
    )
