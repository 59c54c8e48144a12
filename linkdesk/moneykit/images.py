"""Fetching institution images without letting a logo URL reach inside our network (SSRF).

Logo URLs come from MoneyKit's answers, so they are outside data: a URL (or a redirect) to
``http://169.254.169.254/`` or ``http://localhost:5432`` would otherwise make Linkdesk's server
call an internal address. An image is fetched only when

* its URL is ``https`` on an allow-listed image host (``LINKDESK_IMAGE_HOSTS``; exact origins or
  ``https://*.domain`` wildcards), or on a *trusted* origin: one configured as local (a local
  sandbox such as ``http://localhost:8611``) or the origin of ``MONEYKIT_BASE_URL`` /
  ``MONEYKIT_CONNECT_HOST``, which Linkdesk already trusts with its client secret. Only trusted
  origins may use ``http`` or point at a loopback or private address, because an operator
  wrote them down;
* for any other host, its DNS answers are all public addresses (not loopback, private,
  link-local, shared, multicast or reserved), and the connection goes to the address that was
  checked, so a second DNS answer cannot swap in another one (the certificate is still verified
  for the host name);
* every redirect passes the same checks, hop by hop, at most :data:`MAX_REDIRECTS` times;
* the body is at most ``max_bytes`` (announced length and bytes actually read).

No credentials, cookies or proxy settings from the environment are used for these requests.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

__all__ = [
    "DEFAULT_IMAGE_HOSTS",
    "MAX_REDIRECTS",
    "ImageHostEntry",
    "ImagePolicy",
    "ImageRefused",
    "fetch_image",
]

logger = logging.getLogger("linkdesk.moneykit.images")

MAX_REDIRECTS = 3
# MoneyKit's own hosts, whatever the configured base URL (https only).
DEFAULT_IMAGE_HOSTS = ("https://*.moneykit.com",)
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_USER_AGENT = "linkdesk/0.1 (+httpx; images)"

Resolver = Callable[[str, int], list[str]]


class ImageRefused(ValueError):
    """The image was not fetched; the message says why (no secret in it)."""


def _system_resolver(host: str, port: int) -> list[str]:
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ImageRefused(f"image host {host!r} does not resolve") from exc
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_link_local
    )


def _is_local_host(host: str) -> bool:
    """A host name or address literal that can only mean this machine or a private network."""
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return not _is_public(ipaddress.ip_address(host))
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ImageHostEntry:
    """One allow-list entry: ``scheme://host[:port]`` or ``https://*.domain[:port]``."""

    scheme: str
    host: str  # lower-case; for a wildcard, the domain after "*."
    port: int
    wildcard: bool
    # Configured as local, or MoneyKit's own configured origin: exempt from the public-address
    # rule (and so neither resolved nor pinned).
    trusted: bool

    @classmethod
    def parse(cls, text: str, *, trusted: bool = False) -> ImageHostEntry:
        """An entry; ``trusted`` for MoneyKit's configured origins (any scheme, any address)."""
        parts = urlsplit(text.strip())
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"image host {text!r} must be scheme://host[:port]")
        if parts.username or parts.password or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"image host {text!r} must have no user, path or query")
        host = parts.hostname.lower()
        wildcard = host.startswith("*.")
        if wildcard:
            host = host[2:]
        if not host or "*" in host:
            raise ValueError(f"image host {text!r}: only a leading '*.' wildcard is allowed")
        trusted = not wildcard and (trusted or _is_local_host(host))
        if scheme == "http" and not trusted:
            raise ValueError(
                f"image host {text!r}: http is allowed only for a local sandbox "
                "(localhost or a loopback/private address); use https"
            )
        port = parts.port or _DEFAULT_PORTS[scheme]
        return cls(scheme=scheme, host=host, port=port, wildcard=wildcard, trusted=trusted)

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if scheme != self.scheme or port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


@dataclass(frozen=True)
class ImagePolicy:
    entries: tuple[ImageHostEntry, ...]
    resolver: Resolver = _system_resolver

    @classmethod
    def from_hosts(
        cls,
        hosts: Iterable[str],
        *,
        trusted: Iterable[str] = (),
        resolver: Resolver | None = None,
    ) -> ImagePolicy:
        # Trusted origins first: the first matching entry decides.
        entries = [ImageHostEntry.parse(host, trusted=True) for host in trusted if host.strip()]
        entries += [ImageHostEntry.parse(host) for host in hosts if host.strip()]
        return cls(entries=tuple(entries), resolver=resolver or _system_resolver)

    @classmethod
    def for_moneykit(
        cls,
        configured: str | None,
        *,
        base_url: str,
        connect_host: str | None = None,
        resolver: Resolver | None = None,
    ) -> ImagePolicy:
        """The policy for a deployment: ``configured`` (comma-separated entries) when set, else
        MoneyKit's hosts; plus, trusted, the origins of the API and of the hosted Connect UI,
        which the operator configured and Linkdesk already trusts (the client secret goes to
        the API)."""
        hosts = configured.split(",") if configured and configured.strip() else DEFAULT_IMAGE_HOSTS
        trusted = []
        for url in (base_url, connect_host):
            parts = urlsplit(url or "")
            if parts.scheme in _DEFAULT_PORTS and parts.hostname:
                trusted.append(f"{parts.scheme}://{parts.netloc}")
        return cls.from_hosts(hosts, trusted=trusted, resolver=resolver)

    def entry_for(self, url: str) -> tuple[ImageHostEntry, str, int]:
        """The entry allowing ``url`` with its host and port; raises ImageRefused."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ImageRefused("only http(s) image URLs can be fetched")
        if parts.username or parts.password:
            raise ImageRefused("image URLs with credentials are refused")
        try:
            host = (parts.hostname or "").lower()
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise ImageRefused("image URL has an invalid port") from exc
        if not host:
            raise ImageRefused("image URL has no host")
        for entry in self.entries:
            if entry.matches(scheme, host, port):
                return entry, host, port
        raise ImageRefused(f"image host {scheme}://{host}:{port} is not allow-listed")

    def addresses(self, entry: ImageHostEntry, host: str, port: int) -> list[str]:
        """The addresses to connect to, all checked; raises ImageRefused."""
        try:
            literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
                host
            )
        except ValueError:
            literal = None
        answers = [host] if literal is not None else self.resolver(host, port)
        if not answers:
            raise ImageRefused(f"image host {host!r} does not resolve")
        checked: list[str] = []
        for answer in answers:
            try:
                address = ipaddress.ip_address(answer.split("%", 1)[0])
            except ValueError as exc:
                raise ImageRefused(f"image host {host!r} resolved to a non-address") from exc
            if not _is_public(address):
                # One bad answer is enough: a host that resolves inward is not a CDN.
                raise ImageRefused(f"image host {host!r} resolves to a non-public address")
            checked.append(str(address))
        return checked


def _pinned_url(parts: tuple[str, str, str, str, str], address: str, port: int) -> str:
    scheme, _netloc, path, query, _fragment = parts
    ip_host = f"[{address}]" if ":" in address else address
    return urlunsplit((scheme, f"{ip_host}:{port}", path or "/", query, ""))


def fetch_image(
    url: str,
    policy: ImagePolicy,
    *,
    max_bytes: int,
    timeout: float | httpx.Timeout = 10.0,
    http: httpx.Client | None = None,
) -> tuple[str, bytes]:
    """``(content_type, body)`` of the image at ``url`` under ``policy``; raises ImageRefused.

    ``http`` is a caller's own client (its transport: a test's ``httpx.MockTransport`` sends
    nothing anywhere); by default a fresh client without environment proxies is used.
    """
    if http is not None:
        return _follow(http, url, policy, max_bytes)
    # No proxy from the environment: the checked address is the one connected to.
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as own:
        return _follow(own, url, policy, max_bytes)


def _follow(http: httpx.Client, url: str, policy: ImagePolicy, max_bytes: int) -> tuple[str, bytes]:
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        entry, host, port = policy.entry_for(current)
        parts = urlsplit(current)
        if entry.trusted:
            targets: list[str | None] = [None]  # by name: a configured origin is not pinned
        else:
            targets = list(policy.addresses(entry, host, port))
        response = _get_first_reachable(http, parts, host, port, targets, max_bytes)
        if response is None:
            raise ImageRefused(f"image host {host!r} could not be reached")
        status, location, content_type, body = response
        if status in (301, 302, 303, 307, 308):
            if not location:
                raise ImageRefused("image redirect without a location")
            current = urljoin(current, location)
            continue
        if not 200 <= status < 300:
            raise ImageRefused(f"image answered HTTP {status}")
        logger.debug("image fetched from %s (%d bytes)", host, len(body))
        return content_type, body
    raise ImageRefused(f"image redirected more than {MAX_REDIRECTS} times")


def _get_first_reachable(
    http: httpx.Client,
    parts: tuple[str, str, str, str, str],
    host: str,
    port: int,
    addresses: Sequence[str | None],
    max_bytes: int,
) -> tuple[int, str | None, str, bytes] | None:
    scheme = parts[0].lower()
    default_port = _DEFAULT_PORTS[scheme]
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    for address in addresses:
        if address is None:
            target = urlunsplit((parts[0], parts[1], parts[2] or "/", parts[3], ""))
            extensions: dict[str, str] = {}
            headers = {"Accept": "image/*", "User-Agent": _USER_AGENT}
        else:
            target = _pinned_url(parts, address, port)
            extensions = {"sni_hostname": host} if scheme == "https" else {}
            headers = {"Host": host_header, "Accept": "image/*", "User-Agent": _USER_AGENT}
        try:
            with http.stream(
                "GET", target, headers=headers, extensions=extensions, follow_redirects=False
            ) as response:
                location = response.headers.get("location")
                if response.status_code in (301, 302, 303, 307, 308):
                    return response.status_code, location, "", b""
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise ImageRefused(f"image larger than {max_bytes} bytes")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise ImageRefused(f"image larger than {max_bytes} bytes")
                    chunks.append(chunk)
                content_type = response.headers.get("content-type", "")
                return (
                    response.status_code,
                    location,
                    content_type.split(";")[0].strip().lower(),
                    b"".join(chunks),
                )
        except httpx.TransportError as exc:
            logger.info("image host %s not reachable at %s: %s", host, address, type(exc).__name__)
            continue
    return None
