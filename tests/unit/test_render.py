"""The Links table's framed logo and the detail's labelled value: outside text and colours."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote

import pytest

from linkdesk.health import Health
from linkdesk.read.link_rows import LinkRow
from ui.links_table import table_rows
from ui.render import NEUTRAL_SWATCH, framed_logo_data_uri, labelled_value_html

LOGO = "data:image/png;base64,iVBORw0KGgo="


def row(**overrides: object) -> LinkRow:
    values: dict[str, object] = {
        "link_id": "mk_1",
        "customer_id": "cust_1",
        "institution_id": "bank-a",
        "institution_name": "Bank A",
        "institution_color": "#0b63ce",
        "institution_color_dark": "#4f9bff",
        "institution_logo": None,
        "institution_logo_dark": None,
        "institution_avatar": LOGO,
        "institution_avatar_dark": None,
        "state": "connected",
        "error_code": None,
        "health": Health.HEALTHY,
        "provider": None,
        "tags": [],
        "created_at": None,
        "last_synced_at": None,
        "products_refreshed_at": None,
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    values.update(overrides)
    return LinkRow(**values)  # type: ignore[arg-type]


def svg_of(uri: str) -> str:
    prefix = "data:image/svg+xml;charset=utf-8,"
    assert uri.startswith(prefix)
    return unquote(uri[len(prefix) :])


@pytest.mark.parametrize(("dark", "colour"), [(False, "#0b63ce"), (True, "#4f9bff")])
def test_the_logo_is_framed_in_the_theme_s_brand_colour(dark: bool, colour: str) -> None:
    svg = svg_of(framed_logo_data_uri(row(), dark=dark))
    assert f"stroke='{colour}'" in svg
    assert f"href='{LOGO}'" in svg


@pytest.mark.parametrize(
    "hostile",
    ["red;background:url(x)", "#fff' onload='alert(1)", "</svg><script>", "#12345g"],
)
def test_a_colour_that_is_not_hex_never_reaches_the_svg(hostile: str) -> None:
    svg = svg_of(
        framed_logo_data_uri(
            row(institution_color=hostile, institution_color_dark=hostile), dark=False
        )
    )
    assert hostile not in svg
    assert f"stroke='{NEUTRAL_SWATCH}'" in svg


def test_a_logo_that_is_not_a_data_image_gives_way_to_the_escaped_initial() -> None:
    for logo in ("https://bank.example/logo.png", "javascript:alert(1)", None):
        svg = svg_of(
            framed_logo_data_uri(
                row(institution_avatar=logo, institution_name="<Bank>"), dark=False
            )
        )
        assert "<image" not in svg
        assert ">&lt;</text>" in svg


def test_the_labelled_value_is_escaped_and_wraps() -> None:
    html = labelled_value_html("Customer", "<b>cust</b>" * 20, testid="link-customer")
    assert "<b>" not in html
    assert "&lt;b&gt;cust&lt;/b&gt;" in html
    assert "overflow-wrap:anywhere" in html


@pytest.mark.parametrize(
    ("error_code", "reason", "shown"),
    [
        (None, "connected", "—"),
        (None, "product_refresh_failed", "Data refresh failed"),
        (None, "product_refresh_pending", "Data refresh running"),
        ("auth_expired", "auth_expired", "Login expired"),
    ],
)
def test_the_error_column_names_a_refresh_issue_of_a_healthy_link(
    error_code: str | None, reason: str, shown: str
) -> None:
    cells = table_rows([row(error_code=error_code, health_reason=reason)], dark=False)
    assert cells[0]["Error"] == shown
