"""The Demo page: the switch, scenarios against the real sandbox process, the banner, the roles.

These tests run on a copy of the seeded store (switching demo mode on is stored, and must not
leak into the other page tests) with MoneyKit pointed at a real `python -m sandbox` process.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from streamlit.testing.v1 import AppTest

from linkdesk.auth import Role
from tests.app.conftest import CLIENT_ID, CLIENT_SECRET, dashboard
from tests.sandbox_process import running_sandbox
from ui.wiring import get_services

BANNER = "Demo mode"


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox(CLIENT_ID, CLIENT_SECRET, "--demo-links", "200") as url:
        yield url


@pytest.fixture
def demo_env(
    seeded_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_url: str
) -> Iterator[str]:
    source = make_url(seeded_database).database
    assert source is not None
    copy = tmp_path / "demo.db"
    shutil.copyfile(source, copy)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{copy}")
    monkeypatch.setenv("LINKDESK_SIGNING_KEY", "apptest-signing-key-" + "x" * 32)
    monkeypatch.setenv("MONEYKIT_BASE_URL", sandbox_url)
    monkeypatch.setenv("MONEYKIT_CONNECT_HOST", sandbox_url)
    monkeypatch.setenv("MONEYKIT_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("MONEYKIT_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.delenv("LINKDESK_DEMO_MODE", raising=False)
    httpx.delete(f"{sandbox_url}/_sandbox/scenarios").raise_for_status()
    get_services.clear()
    yield sandbox_url
    get_services.clear()


def _texts(app: AppTest) -> str:
    parts = [m.value for m in app.markdown] + [i.value for i in app.info]
    parts += [e.value for e in app.error] + [s.value for s in app.success]
    parts += [c.value for c in app.caption] + [t.value for t in app.title]
    return "\n".join(str(p) for p in parts)


def test_admin_switches_demo_mode_on_and_the_banner_follows(demo_env: str) -> None:
    app = dashboard(role=Role.ADMIN, page="demo").run()
    assert not app.exception
    assert "Demo mode is off" in _texts(app)
    assert app.toggle(key="demo.switch").value is False
    assert BANNER + " ·" not in _texts(app)

    app.toggle(key="demo.switch").set_value(True).run()
    assert not app.exception
    assert "Demo mode is on." in _texts(app)
    titles = [s.value for s in app.subheader]
    assert "Scenarios" in titles and "Reset" in titles
    assert any(BANNER in i.value for i in app.info)  # the banner, on every page from now on

    overview = dashboard(role=Role.VIEWER).run()
    assert any(BANNER in i.value for i in overview.info)


def test_presenter_starts_a_scenario_and_watches_it_play(demo_env: str) -> None:
    admin = dashboard(role=Role.ADMIN, page="demo").run()
    admin.toggle(key="demo.switch").set_value(True).run()

    support = dashboard(role=Role.SUPPORT, page="demo").run()
    assert not support.exception
    assert support.get("toggle") == []  # only admins flip the switch
    assert [s.value for s in support.subheader].count("Reset") == 0
    support.button(key="demo.start.oauth_outage").click().run()
    assert not support.exception
    runs = httpx.get(f"{demo_env}/_sandbox/scenarios").json()["runs"]
    assert [(r["name"], r["status"]) for r in runs] == [("oauth_outage", "running")]
    assert any("playing" in (p.proto.text or "") for p in support.get("progress"))
    stop = support.button(key="demo.stop")
    stop.click().run()
    runs = httpx.get(f"{demo_env}/_sandbox/scenarios").json()["runs"]
    assert [r["status"] for r in runs] == ["stopped"]


def test_viewers_never_see_the_demo_page_and_refusals_are_explained(
    demo_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer = dashboard(role=Role.VIEWER, page="demo").run()
    assert not viewer.exception
    assert "Scenarios" not in [s.value for s in viewer.subheader]

    # MoneyKit somewhere that is not the sandbox: switching on is refused and explained.
    monkeypatch.setenv("MONEYKIT_BASE_URL", "http://localhost:9")
    get_services.clear()
    admin = dashboard(role=Role.ADMIN, page="demo").run()
    admin.toggle(key="demo.switch").set_value(True).run()
    assert not admin.exception
    assert "did not answer as one" in _texts(admin)
    assert admin.toggle(key="demo.switch").value is False
