"""Institutions, their SVG images, and the hosted Connect pages' HTTP surface."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from moneykit.models import GetInstitutionsResponse, Institution
from starlette.testclient import TestClient

ErrorCheck = Callable[[httpx.Response, int, str], dict[str, Any]]
HEX = re.compile(r"^#[0-9a-f]{6}$")
TEST_BANKS = {"moneykit-creds-bank", "moneykit-instant-bank", "moneykit-oauth-bank"}


def _all_institutions(api: TestClient, **params: Any) -> tuple[list[dict[str, Any]], int]:
    found: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        response = api.get("/institutions", params=query)
        assert response.status_code == 200
        assert GetInstitutionsResponse.from_dict(response.json()) is not None
        found.extend(response.json()["institutions"])
        pages += 1
        cursor = response.json()["cursors"]["next"]
        if not cursor:
            return found, pages


def test_catalogue_paged(api: TestClient) -> None:
    everything, pages = _all_institutions(api, limit=4)
    ids = [inst["institution_id"] for inst in everything]
    assert len(ids) == len(set(ids)) >= 15
    assert pages == -(-len(ids) // 4)
    assert set(ids) >= TEST_BANKS
    assert len({inst["name"] for inst in everything}) == len(ids)
    assert len({inst["color"] for inst in everything}) == len(ids)
    for inst in everything:
        assert HEX.match(inst["color"]) and HEX.match(inst["color_dark"])
        assert inst["color"] != inst["color_dark"]
        for kind in ("logo", "logo_dark", "avatar", "avatar_dark"):
            assert inst[kind] == (
                f"http://localhost:8611/assets/institutions/{inst['institution_id']}/{kind}.svg"
            )


def test_institution_filters(api: TestClient) -> None:
    named, _ = _all_institutions(api, name="cred")
    assert [i["name"] for i in named] == ["Credentials Bank"]
    featured, _ = _all_institutions(api, featured="true")
    assert featured and all(i["is_featured"] for i in featured)
    everything, _ = _all_institutions(api)
    assert len(featured) < len(everything)


def test_one_institution(api: TestClient, moneykit_error: ErrorCheck) -> None:
    response = api.get("/institutions/moneykit-creds-bank")
    assert response.status_code == 200
    inst = Institution.from_dict(response.json())
    assert inst is not None and inst.name == "Credentials Bank"
    assert inst.additional_properties["avatar"].endswith("/moneykit-creds-bank/avatar.svg")
    by_alias = api.get("/institutions/mx.harborline").json()
    assert by_alias["institution_id"] == "harborline-bank"
    moneykit_error(api.get("/institutions/nope"), 404, "institution_error.not_found")


@pytest.mark.parametrize("limit", [0, 1001])
def test_institution_limit(api: TestClient, moneykit_error: ErrorCheck, limit: int) -> None:
    moneykit_error(
        api.get("/institutions", params={"limit": limit}),
        422,
        "api_error.request.validation_failed",
    )


@pytest.mark.parametrize("kind", ["logo", "logo_dark", "avatar", "avatar_dark"])
def test_images_are_svg_in_brand_colours(client: TestClient, kind: str) -> None:
    response = client.get(f"/assets/institutions/moneykit-creds-bank/{kind}.svg")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    root = ET.fromstring(response.text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    colour = "#4f9bff" if kind.endswith("_dark") else "#0b63ce"
    fills = {el.get("fill") for el in root.iter()}
    assert colour in fills
    assert "Credentials Bank" in (root.get("aria-label") or "")


def test_image_names_are_escaped(client: TestClient) -> None:
    svg = client.get("/assets/institutions/thistle-crown/logo.svg").text
    assert "Thistle &amp; Crown Bank" in svg
    ET.fromstring(svg)


@pytest.mark.parametrize(
    "path", ["/assets/institutions/nope/logo.svg", "/assets/institutions/moneykit-creds-bank/x.svg"]
)
def test_unknown_image(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


class _AssetRefs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs.extend(v for k, v in attrs if k in ("src", "href") and v)


@pytest.mark.parametrize("path", ["/start", "/relink", "/continue"])
def test_connect_pages_allow_local_framing(client: TestClient, path: str) -> None:
    query = (
        "?applicationName&device&launcherVersion=0.3.26&linkSessionToken=lst_x"
        "&origin=http%3A%2F%2Flocalhost%3A8501&stepTimers=false"
    )
    response = client.get(path + query)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "x-frame-options" not in response.headers
    csp = response.headers["content-security-policy"]
    ancestors = next(d for d in csp.split(";") if d.strip().startswith("frame-ancestors"))
    assert "http://localhost:*" in ancestors.split()
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"

    refs = _AssetRefs()
    refs.feed(response.text)
    assert refs.refs, "page loads its script and style"
    for ref in refs.refs:
        assert ref.startswith("/"), f"external asset {ref}"
        asset = client.get(ref)
        assert asset.status_code == 200
        assert asset.headers["content-type"].split(";")[0] in ("text/javascript", "text/css")


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/nowhere").json()["error_code"] == "api_error.not_found"
    assert client.put("/links").status_code == 405
