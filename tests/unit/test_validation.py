"""Colour, image and logo URL checks: hostile values from outside must never reach CSS or HTML."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkdesk.validation import MAX_IMAGE_BYTES, image_data_uri, safe_hex_color, safe_logo_url


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("#fff", "#fff"),
        ("#FFF", "#fff"),
        ("#1a2B3c", "#1a2b3c"),
        (" #abcdef ", "#abcdef"),
        ("red", None),
        ("red;background:url(x)", None),
        ("#fff;background:url(https://evil.test/x)", None),
        ("#ffffff}body{display:none", None),
        ("#ffff", None),
        ("#fffffff", None),
        ("#ggg", None),
        ("fff", None),
        ("#fff\n", "#fff"),
        ("#fff\nx", None),
        ("rgb(0,0,0)", None),
        ("var(--x)", None),
        ("expression(alert(1))", None),
        ("", None),
        (None, None),
        (123, None),
        (["#fff"], None),
    ],
)
def test_safe_hex_color(value, expected):
    assert safe_hex_color(value) == expected


@given(st.text(max_size=20))
def test_safe_hex_color_only_ever_returns_plain_hex(text):
    result = safe_hex_color(text)
    if result is not None:
        assert result[0] == "#" and len(result) in (4, 7)
        assert all(c in "0123456789abcdef" for c in result[1:])


SVG = b"<svg xmlns='http://www.w3.org/2000/svg'/>"


@pytest.mark.parametrize(
    ("content_type", "data", "expected_prefix"),
    [
        ("image/svg+xml", SVG, "data:image/svg+xml;base64,"),
        ("image/svg+xml; charset=utf-8", SVG, "data:image/svg+xml;base64,"),
        ("IMAGE/PNG", b"\x89PNG", "data:image/png;base64,"),
        ("image/jpeg", b"\xff\xd8", "data:image/jpeg;base64,"),
        ("image/webp", b"RIFF", "data:image/webp;base64,"),
        ("image/gif", b"GIF89a", "data:image/gif;base64,"),
        ("text/html", b"<script>", None),
        ("application/javascript", b"alert(1)", None),
        ("image/x-icon", b"\x00", None),
        ("image/svg", SVG, None),
        ("", SVG, None),
        (None, SVG, None),
        ("image/png", b"", None),
    ],
)
def test_image_data_uri_types(content_type, data, expected_prefix):
    result = image_data_uri(content_type, data)
    if expected_prefix is None:
        assert result is None
    else:
        assert result is not None and result.startswith(expected_prefix)
        assert base64.b64decode(result.split(",", 1)[1]) == data


@pytest.mark.parametrize(
    ("size", "accepted"),
    [
        (1, True),
        (MAX_IMAGE_BYTES - 1, True),
        (MAX_IMAGE_BYTES, True),
        (MAX_IMAGE_BYTES + 1, False),
        (10 * MAX_IMAGE_BYTES, False),
    ],
)
def test_image_data_uri_size_cap(size, accepted):
    svg = b"<svg>" + b" " * max(size - 11, 0) + b"</svg>"
    svg = svg[:size] if size < 11 else svg
    assert len(svg) == size
    assert (image_data_uri("image/svg+xml", svg) is not None) is accepted


def test_image_data_uri_round_trips_through_safe_logo_url():
    uri = image_data_uri("image/svg+xml", SVG)
    assert safe_logo_url(uri) == uri


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.example/logo.svg", "https://cdn.example/logo.svg"),
        ("HTTPS://cdn.example/logo.svg", "HTTPS://cdn.example/logo.svg"),
        ("data:image/png;base64,iVBORw0KGgo=", "data:image/png;base64,iVBORw0KGgo="),
        ("http://cdn.example/logo.svg", None),
        ("javascript:alert(1)", None),
        ("JaVaScRiPt:alert(1)", None),
        (" javascript:alert(1)", None),
        ("java\nscript:alert(1)", None),
        ("vbscript:msgbox(1)", None),
        ("data:text/html;base64,PHNjcmlwdD4=", None),
        ("data:image/svg+xml,<svg onload=alert(1)>", None),
        ("data:image/svg+xml;utf8,<svg/>", None),
        ("data:image/png;base64,not base64!", None),
        ("data:image/png;base64,", None),
        ('https://x/"onerror="alert(1)', None),
        ("https://x/a'b", None),
        ("https://x/<script>", None),
        ("https:///nohost", None),
        ("//cdn.example/logo.svg", None),
        ("/relative/logo.svg", None),
        ("file:///etc/passwd", None),
        ("ftp://x/logo.png", None),
        ("", None),
        (None, None),
        (42, None),
    ],
)
def test_safe_logo_url(url, expected):
    assert safe_logo_url(url) == expected


def test_safe_logo_url_refuses_oversized_data_uri():
    big = "data:image/png;base64," + "A" * (MAX_IMAGE_BYTES * 2)
    assert safe_logo_url(big) is None
