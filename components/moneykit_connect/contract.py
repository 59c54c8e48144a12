"""Checks at the boundary between Python and the Connect component.

Everything here is pure: no Streamlit, no I/O. Arguments going to the browser are
checked before they leave (a wrong Connect host fails silently in the browser), and
the event log coming back is treated as untrusted input: whatever does not have the
contract's shape is dropped, never raised.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from linkdesk.connect_log import LogEntry
from linkdesk.connect_log import parse_entry as parse_log_entry

Mode = Literal["link", "relink", "continue"]
ColorScheme = Literal["light", "dark"]

MODES: frozenset[str] = frozenset(get_args(Mode))
COLOR_SCHEMES: frozenset[str] = frozenset(get_args(ColorScheme))

MAX_SESSION_ID_LENGTH = 200

_DEFAULT_PORTS = {"http": 80, "https": 443}
_ORIGIN_RE = re.compile(
    r"(?P<scheme>https?)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(?P<port>[0-9]+))?"
)
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_DECIMAL_OCTET_RE = re.compile(r"0|[1-9][0-9]{0,2}")


def _host_problem(host: str) -> str | None:
    """Why the browser would serialise ``host`` differently, or None if it would not."""
    if host.startswith("["):
        # IPv6 literals are compressed by the URL parser; only accept what survives
        # a round trip unchanged.
        try:
            compressed = ipaddress.IPv6Address(host[1:-1]).compressed
        except ValueError:
            return "the IPv6 address is not valid"
        return None if f"[{compressed}]" == host else f"write the address as [{compressed}]"
    labels = host.split(".")
    if any(not label for label in labels):
        return "the host has an empty label (leading, trailing or doubled dot)"
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        # The URL parser rewrites numeric hosts (127.1, 0x7f.0.0.1, 010.0.0.1) into a
        # canonical dotted quad, so anything else would not match event.origin.
        if len(labels) != 4 or not all(
            _DECIMAL_OCTET_RE.fullmatch(label) and int(label) <= 255 for label in labels
        ):
            return "an IPv4 host must be four decimal numbers 0-255 without leading zeros"
        return None
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        return "the host has characters the browser would encode"
    return None


def validate_connect_host(connect_host: str) -> str:
    """Return ``connect_host`` unchanged if it is a bare origin, else raise ValueError.

    The launcher builds its iframe URL from this string, uses it as the targetOrigin of
    what it posts, and accepts a message only when ``event.origin`` equals it byte for
    byte. So it must be exactly the browser's serialisation of an origin:
    ``scheme://host[:port]`` in lowercase, the port only when it is not the scheme's
    default, and no path (not even ``/``), query, fragment or credentials.
    """
    if not isinstance(connect_host, str):
        raise ValueError("connect_host must be a string such as 'http://localhost:8611'")

    def reject(reason: str) -> ValueError:
        return ValueError(
            f"connect_host {connect_host!r} is not a bare origin ({reason}); "
            "use scheme://host[:port] exactly as the browser reports event.origin, "
            "e.g. 'http://localhost:8611' or 'https://connect.moneykit.com'"
        )

    match = _ORIGIN_RE.fullmatch(connect_host)
    if match is None:
        try:
            parts = urlsplit(connect_host) if "://" in connect_host else None
        except ValueError:
            raise reject("it is not a URL") from None
        if parts is None or parts.scheme.lower() not in _DEFAULT_PORTS:
            raise reject("it must start with http:// or https://")
        if parts.path or parts.query or parts.fragment or connect_host.endswith(("?", "#")):
            raise reject("remove the path, trailing slash, query or fragment")
        if "@" in parts.netloc:
            raise reject("remove the user name and password")
        raise reject("scheme and host must be lowercase ASCII and the port a number")

    scheme, host, port = match["scheme"], match["host"], match["port"]
    problem = _host_problem(host)
    if problem is not None:
        raise reject(problem)
    if port is not None:
        if port != str(int(port)) or not 1 <= int(port) <= 65535:
            raise reject("the port must be a number 1-65535 without leading zeros")
        if int(port) == _DEFAULT_PORTS[scheme]:
            raise reject(f"the browser omits the default port {port} for {scheme}")
    return connect_host


def validate_redirect_url(redirect_url: str) -> str:
    """The page URL handed to ``continue()``: an absolute http(s) URL."""
    parts = urlsplit(redirect_url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise ValueError(
            "redirect_url must be the absolute http(s) URL of the OAuth return page, "
            "including the query string the bank appended"
        )
    return redirect_url


def _is_printable_id(value: str) -> bool:
    return bool(value) and value.isprintable() and not any(ch.isspace() for ch in value)


@dataclass(frozen=True)
class LaunchArgs:
    """What the component needs to open one Connect session (sent to the browser)."""

    mode: Mode
    session_id: str
    connect_host: str
    link_session_token: str | None
    redirect_url: str | None
    color_scheme: ColorScheme

    def __repr__(self) -> str:
        # The link-session token must never reach logs or tracebacks.
        token = "<set>" if self.link_session_token else None
        return (
            f"LaunchArgs(mode={self.mode!r}, session_id={self.session_id!r}, "
            f"connect_host={self.connect_host!r}, link_session_token={token!r}, "
            f"redirect_url={self.redirect_url!r}, color_scheme={self.color_scheme!r})"
        )

    def to_component_data(self) -> dict[str, str | None]:
        return {
            "mode": self.mode,
            "session_id": self.session_id,
            "connect_host": self.connect_host,
            "link_session_token": self.link_session_token,
            "redirect_url": self.redirect_url,
            "color_scheme": self.color_scheme,
        }


def validate_launch(
    *,
    mode: str,
    session_id: str,
    connect_host: str,
    link_session_token: str | None = None,
    redirect_url: str | None = None,
    color_scheme: str = "light",
) -> LaunchArgs:
    """Check the arguments of one Connect launch; raise ValueError naming the problem.

    ``link`` and ``relink`` need the link-session token from ``POST /link-session``;
    ``continue`` needs the OAuth return page's full URL and takes no token (the
    launcher reads it back from localStorage).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, not {mode!r}")
    if not isinstance(session_id, str) or not _is_printable_id(session_id):
        raise ValueError("session_id must be a non-empty string without spaces")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise ValueError(f"session_id must be at most {MAX_SESSION_ID_LENGTH} characters")
    validate_connect_host(connect_host)
    if color_scheme not in COLOR_SCHEMES:
        raise ValueError(f"color_scheme must be one of {sorted(COLOR_SCHEMES)}")

    if mode in ("link", "relink"):
        # The token's value is never echoed back: it is a credential.
        if not isinstance(link_session_token, str) or not _is_printable_id(link_session_token):
            raise ValueError(f"mode {mode!r} needs link_session_token from POST /link-session")
        if redirect_url is not None:
            raise ValueError(f"redirect_url is only used with mode 'continue', not {mode!r}")
    else:
        if not isinstance(redirect_url, str) or not redirect_url:
            raise ValueError("mode 'continue' needs redirect_url, the OAuth return page URL")
        validate_redirect_url(redirect_url)
        if link_session_token is not None:
            raise ValueError(
                "mode 'continue' takes no link_session_token; "
                "the launcher reads the token it stored itself"
            )

    return LaunchArgs(
        mode=mode,  # type: ignore[arg-type]  # narrowed by the MODES check above
        session_id=session_id,
        connect_host=connect_host,
        link_session_token=link_session_token,
        redirect_url=redirect_url,
        color_scheme=color_scheme,  # type: ignore[arg-type]  # narrowed above
    )


def parse_entry(raw: Any, *, session_id: str) -> dict[str, Any] | None:
    """One log entry in the contract's shape, or None if ``raw`` is not one (the rules are
    the core's one parser, :func:`linkdesk.connect_log.parse_entry`).

    Entries of another session are rejected too: the component's state outlives a
    change of session under the same key until the new session publishes its log.
    """
    entry = parse_log_entry(raw, session_id=session_id)
    return entry.to_dict() if entry is not None else None


def sanitize_log(raw_log: Any, *, session_id: str) -> list[dict[str, Any]]:
    """The valid entries of ``raw_log`` for ``session_id``, ordered by ``seq``.

    Malformed entries are dropped one by one so that a single bad payload cannot hide
    the success that follows it. If two entries claim the same ``seq`` the first wins;
    the component never produces that, and applying by (session_id, seq) downstream
    would keep only one anyway.
    """
    return [entry.to_dict() for entry in parse_log(raw_log, session_id=session_id)]


def parse_log(raw_log: Any, *, session_id: str) -> list[LogEntry]:
    """:func:`sanitize_log` as the core's typed entries: what the Connect service is handed."""
    if not isinstance(raw_log, list | tuple):
        return []
    by_seq: dict[int, LogEntry] = {}
    for raw in raw_log:
        entry = parse_log_entry(raw, session_id=session_id)
        if entry is not None and entry.seq not in by_seq:
            by_seq[entry.seq] = entry
    return [by_seq[seq] for seq in sorted(by_seq)]
