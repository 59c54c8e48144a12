"""Bad and hostile URL parameters on every page: no traceback, and nothing from the URL is
rendered as Markdown (an image or a link in an alert, a caption, a metric or a page link)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from linkdesk.auth import Role
from tests.app.conftest import dashboard

IMAGE = "![x](http://127.0.0.1:9/pixel)"
LINK = "[support](http://127.0.0.1:9/login)"

CASES = [
    ("links", {"link": IMAGE}),
    ("links", {"link": LINK}),
    ("links", {"link": "x" * 5000}),
    ("links", {"link": "mk_\x00\r\n"}),
    ("links", {"health": "not-a-health"}),
    ("links", {"error": IMAGE}),
    ("links", {"institution": LINK}),
    ("links", {"customer": IMAGE}),
    ("links", {"q": "' OR 1=1 --"}),
    ("links", {"q": "%_%"}),
    ("customer", {"customer": IMAGE}),
    ("customer", {"customer": LINK + " " + "y" * 400}),
    ("webhooks", {"delivery": "-1"}),
    ("webhooks", {"delivery": "99999999999999999999"}),
    ("webhooks", {"delivery": IMAGE}),
]


def texts(app: AppTest) -> list[str]:
    kinds = ("markdown", "caption", "error", "warning", "info", "success", "metric", "title")
    found: list[str] = []
    for kind in kinds:
        for element in getattr(app, kind):
            found.append(str(getattr(element, "value", "")))
            found.append(str(getattr(element, "label", "")))
    return found


@pytest.mark.parametrize(
    ("page", "params"), CASES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(CASES)]
)
def test_hostile_parameters_are_refused_or_shown_as_text(
    app_env: str, page: str, params: dict[str, str]
) -> None:
    app = dashboard(role=Role.ADMIN, page=page, **params).run()
    assert not app.exception
    for text in texts(app):
        assert "](http" not in text, text  # a Markdown image or link would start here
