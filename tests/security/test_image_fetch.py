"""Institution logos cannot be used to make Linkdesk's server call an internal address (SSRF).

Every network test uses loopback canary servers only: the allowed "sandbox" is a canary on a
configured local origin, and the targets that must be refused are other canaries that record
whether they were reached. Addresses that must never be connected to are only ever "resolved"
by an injected resolver and refused before any connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.images import (
    MAX_REDIRECTS,
    ImageHostEntry,
    ImagePolicy,
    ImageRefused,
    fetch_image,
)
from linkdesk.services.institutions import InstitutionFetcher
from tests.security.canary import PIXEL_SVG, Answer, Canary, running_canary

LIMIT = 64 * 1024


@pytest.fixture()
def sandbox() -> Iterator[Canary]:
    with running_canary() as canary:
        yield canary


@pytest.fixture()
def internal() -> Iterator[Canary]:
    """Plays an internal service (database admin, metadata endpoint) that must stay unreached."""
    with running_canary() as canary:
        yield canary


def local_policy(sandbox: Canary) -> ImagePolicy:
    return ImagePolicy.from_hosts([sandbox.origin])


def test_a_configured_local_sandbox_serves_its_logos(sandbox: Canary) -> None:
    assert fetch_image(sandbox.url("/logo.svg"), local_policy(sandbox), max_bytes=LIMIT) == (
        "image/svg+xml",
        PIXEL_SVG,
    )
    assert sandbox.hits == ["GET /logo.svg"]
    assert "authorization" not in sandbox.headers[0] and "cookie" not in sandbox.headers[0]


def test_the_default_policy_follows_a_local_sandbox_base_url(sandbox: Canary) -> None:
    policy = ImagePolicy.for_moneykit(None, base_url=sandbox.origin)
    assert fetch_image(sandbox.url("/a.svg"), policy, max_bytes=LIMIT)[1] == PIXEL_SVG


def test_the_client_fetches_through_its_policy(sandbox: Canary, internal: Canary) -> None:
    client = MoneyKitClient(client_id="id", client_secret="secret", base_url=sandbox.origin)
    try:
        assert client.fetch_image(sandbox.url("/a.svg"))[1] == PIXEL_SVG
        with pytest.raises(ImageRefused):
            client.fetch_image(internal.url("/a.svg"))
    finally:
        client.close()
    assert internal.hits == []


def test_an_unlisted_loopback_host_is_refused(sandbox: Canary, internal: Canary) -> None:
    with pytest.raises(ImageRefused, match="not allow-listed"):
        fetch_image(internal.url("/admin"), local_policy(sandbox), max_bytes=LIMIT)
    assert internal.hits == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_an_internal_address_is_refused(
    sandbox: Canary, internal: Canary, status: int
) -> None:
    sandbox.routes["/logo.svg"] = Answer(status=status, headers={"Location": internal.url("/x")})
    with pytest.raises(ImageRefused, match="not allow-listed"):
        fetch_image(sandbox.url("/logo.svg"), local_policy(sandbox), max_bytes=LIMIT)
    assert internal.hits == []


@pytest.mark.parametrize(
    "location",
    [
        "{internal}/latest/meta-data/",  # a metadata-style endpoint, played by the canary
        "http://localhost:{internal_port}/",  # the same service under another loopback name
        "http://[::1]:{internal_port}/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{internal_port}/_INFO",
    ],
)
def test_redirects_to_internal_services_or_other_schemes_are_refused_unconnected(
    sandbox: Canary, internal: Canary, location: str
) -> None:
    target = location.format(internal=internal.origin, internal_port=internal.port)
    sandbox.routes["/logo.svg"] = Answer(status=302, headers={"Location": target})
    with pytest.raises(ImageRefused):
        fetch_image(sandbox.url("/logo.svg"), local_policy(sandbox), max_bytes=LIMIT)
    assert internal.hits == []


def test_a_redirect_within_the_allowed_host_is_followed_and_the_chain_is_bounded(
    sandbox: Canary,
) -> None:
    sandbox.routes["/old.svg"] = Answer(status=301, headers={"Location": "/new.svg"})
    assert fetch_image(sandbox.url("/old.svg"), local_policy(sandbox), max_bytes=LIMIT)[1]
    sandbox.routes["/loop.svg"] = Answer(status=302, headers={"Location": "/loop.svg"})
    sandbox.hits.clear()
    with pytest.raises(ImageRefused, match="redirected more than"):
        fetch_image(sandbox.url("/loop.svg"), local_policy(sandbox), max_bytes=LIMIT)
    assert len(sandbox.hits) == MAX_REDIRECTS + 1


@pytest.mark.parametrize(
    "answer",
    [
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_an_allowed_host_that_resolves_inward_is_refused_before_connecting(answer: str) -> None:
    connected: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        connected.append(str(request.url))
        return httpx.Response(200, content=PIXEL_SVG, headers={"content-type": "image/svg+xml"})

    policy = ImagePolicy.from_hosts(
        ["https://*.moneykit.test"], resolver=lambda host, port: ["93.184.215.14", answer]
    )
    with pytest.raises(ImageRefused, match="non-public"):
        fetch_image(
            "https://cdn.moneykit.test/logo.svg",
            policy,
            max_bytes=LIMIT,
            http=httpx.Client(transport=httpx.MockTransport(record)),
        )
    assert connected == []


def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    resolved: list[str] = []
    answers = iter([["93.184.215.14"], ["127.0.0.1"]])  # a rebinding DNS: second answer inward

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return next(answers)

    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PIXEL_SVG, headers={"content-type": "image/svg+xml"})

    policy = ImagePolicy.from_hosts(["https://*.moneykit.test"], resolver=resolver)
    fetch_image(
        "https://cdn.moneykit.test/l.svg",
        policy,
        max_bytes=LIMIT,
        http=httpx.Client(transport=httpx.MockTransport(record)),
    )
    assert resolved == ["cdn.moneykit.test"]  # resolved once
    assert seen[0].url.host == "93.184.215.14"
    assert seen[0].headers["host"] == "cdn.moneykit.test"


@pytest.mark.parametrize(
    "url",
    [
        "http://cdn.moneykit.test/logo.svg",  # https only for a non-local host
        "https://moneykit.test/logo.svg",  # the wildcard needs a subdomain
        "https://cdn.moneykit.test.evil.example/logo.svg",
        "https://cdn.moneykit.test:8443/logo.svg",  # another port
        "https://user:pw@cdn.moneykit.test/logo.svg",
        "ftp://cdn.moneykit.test/logo.svg",
        "javascript:alert(1)",
        "data:image/svg+xml;base64,PHN2Zy8+",
        "//cdn.moneykit.test/logo.svg",
        "https://cdn.moneykit.test:99999/logo.svg",
    ],
)
def test_urls_outside_the_allow_list_are_refused(url: str) -> None:
    policy = ImagePolicy.from_hosts(
        ["https://*.moneykit.test"], resolver=lambda host, port: ["93.184.215.14"]
    )
    with pytest.raises(ImageRefused):
        policy.entry_for(url)


@pytest.mark.parametrize(
    "entry",
    ["http://cdn.example.com", "https://*", "https://a.*.com", "https://x.com/path", "ftp://x"],
)
def test_unsafe_allow_list_entries_are_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError):
        ImageHostEntry.parse(entry)


def test_a_production_base_url_does_not_allow_local_addresses() -> None:
    policy = ImagePolicy.for_moneykit(None, base_url="https://api.moneykit.com")
    with pytest.raises(ImageRefused):
        policy.entry_for("http://localhost:8611/assets/a.svg")
    entry, _host, _port = policy.entry_for("https://cdn.moneykit.com/a.svg")
    assert not entry.trusted  # resolved, checked and pinned
    entry, _host, _port = policy.entry_for("https://api.moneykit.com/a.svg")
    assert entry.trusted  # the API's own origin: already trusted with the client secret


def test_configured_hosts_replace_the_moneykit_wildcard() -> None:
    policy = ImagePolicy.for_moneykit(
        "https://images.example.net", base_url="https://api.moneykit.com"
    )
    assert policy.entry_for("https://images.example.net/a.svg")[0].host == "images.example.net"
    with pytest.raises(ImageRefused):
        policy.entry_for("https://cdn.moneykit.com/a.svg")


def test_an_oversized_image_is_refused(sandbox: Canary) -> None:
    # (A body without a declared length is cut off too: tests/unit/test_client.py.)
    big = b"<svg>" + b" " * (LIMIT + 10) + b"</svg>"
    sandbox.routes["/big.svg"] = Answer(body=big, headers={"Content-Type": "image/svg+xml"})
    with pytest.raises(ImageRefused, match="larger than"):
        fetch_image(sandbox.url("/big.svg"), local_policy(sandbox), max_bytes=LIMIT)


def test_the_institution_fetcher_stores_nothing_for_a_refused_logo(
    sandbox: Canary, internal: Canary
) -> None:
    client = MoneyKitClient(client_id="id", client_secret="secret", base_url=sandbox.origin)
    try:
        fetcher = InstitutionFetcher(client)
        assert fetcher.image(internal.url("/logo.svg")) is None
        assert fetcher.image(sandbox.url("/logo.svg")) is not None
    finally:
        client.close()
    assert internal.hits == []
