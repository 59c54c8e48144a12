"""The Overview page, drawn headless from the store discovery filled (and from an empty one)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import pyarrow as pa
import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash

from linkdesk.auth import Role
from linkdesk.store import Store, create_engine
from linkdesk.store.queries import Health, LinkQueries
from tests.app.conftest import as_shown, dashboard
from ui.wiring import get_services

LINKS_PAGE_HASH = calc_hash("links")
CUSTOMER_PAGE_HASH = calc_hash("customer")


def overview(role: Role = Role.SUPPORT) -> AppTest:
    app = dashboard(role=role).run()  # the landing page, no switch needed
    assert not app.exception
    return app


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def page_links(app: AppTest) -> list[tuple[str, dict[str, list[str]]]]:
    """The page links to the Links list (the customers under "Broke today" open their timeline)."""
    found = []
    for link in app.get("page_link"):
        assert link.proto.page_script_hash in (LINKS_PAGE_HASH, CUSTOMER_PAGE_HASH)
        if link.proto.page_script_hash == LINKS_PAGE_HASH:
            found.append((as_shown(link.proto.label), parse_qs(link.proto.query_string)))
    return found


def charts(app: AppTest) -> list[object]:
    return [e for e in app.main if getattr(e, "type", "") == "vega_lite_chart"]


def chart_rows(chart: object) -> list[dict[str, object]]:
    """The data a chart was drawn from (Streamlit ships it as an Arrow stream)."""
    proto = chart.proto  # type: ignore[attr-defined]
    return list(pa.ipc.open_stream(proto.data.data).read_all().to_pylist())


def sql(database_url: str, statement: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(sa.text(statement))]
    engine.dispose()
    return rows


def test_headline_numbers_match_the_store_and_link_to_the_filtered_list(app_env: str) -> None:
    app = overview()
    (expired,) = sql(app_env, "SELECT count(*) FROM links WHERE error_code = 'auth_expired'")[0]
    counts = LinkQueries(Store(create_engine(app_env))).counts_by_health()
    assert int(str(expired)) > 0
    assert metric(app, "Login expired") == str(expired)
    assert metric(app, "Needs relink") == str(counts[Health.NEEDS_RELINK])
    assert metric(app, "🔴 Needs relink") == str(counts[Health.NEEDS_RELINK])
    assert metric(app, "✅ Healthy") == str(counts[Health.HEALTHY])

    links = page_links(app)
    assert ("Show them", {"error": ["auth_expired"]}) in links
    assert ("Show them", {"health": ["needs_relink"]}) in links
    healthy = f"Open {counts[Health.HEALTHY]} healthy"
    assert (healthy, {"health": ["healthy"]}) in links
    assert any("Live" in caption.value for caption in app.caption)  # the self-refreshing panel


def test_banks_in_error_are_counted_in_sql_and_each_links_to_its_links(app_env: str) -> None:
    app = overview()
    expected = sql(
        app_env,
        "SELECT l.institution_id, i.name, count(*) FROM links l "
        "JOIN institutions i ON i.institution_id = l.institution_id "
        "WHERE l.state = 'error' GROUP BY l.institution_id, i.name",
    )
    assert expected
    top = sorted(expected, key=lambda row: (-int(str(row[2])), str(row[1])))[:10]
    by_bank = {label: params for label, params in page_links(app) if "institution" in params}
    assert len(by_bank) == len(top)
    for institution_id, name, errors in top:
        label = next(label for label in by_bank if label.startswith(f"{name}: {errors} of "))
        assert by_bank[label] == {"institution": [str(institution_id)]}
    assert len(charts(app)) == 2  # the trend and the banks in error


def test_the_period_changes_the_trend_window(app_env: str) -> None:
    app = overview()
    rows = chart_rows(charts(app)[0])
    assert len({row["day"] for row in rows}) == 30
    # Each link's latest recorded change says what it is in now (a different query shape from
    # the page's: NOT EXISTS instead of a window function).
    (today_expired,) = sql(
        app_env,
        "SELECT count(*) FROM link_state_changes c WHERE c.to_state = 'error' "
        "AND c.to_error = 'auth_expired' AND NOT EXISTS (SELECT 1 FROM link_state_changes n "
        "WHERE n.link_id = c.link_id AND (n.at > c.at OR (n.at = c.at AND n.id > c.id)))",
    )[0]
    last_day = max(str(row["day"]) for row in rows)
    assert [
        r["links"] for r in rows if str(r["day"]) == last_day and "auth" in str(r["series"])
    ] == [today_expired]
    app.button_group(key="overview.days").set_value(7).run()
    assert not app.exception
    assert len({row["day"] for row in chart_rows(charts(app)[0])}) == 7


def test_an_empty_store_gets_a_helpful_message_and_no_chart(
    app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_services.clear()
    app = overview()
    assert any("No links in the store yet" in info.value for info in app.info)
    assert not charts(app)
    assert metric(app, "Needs relink") == "0"


def test_every_role_gets_the_overview(app_env: str) -> None:
    app = overview(Role.VIEWER)
    assert [title.value for title in app.title] == ["Overview"]


def test_the_links_list_behind_the_numbers_sorts_and_exports(app_env: str) -> None:
    """The Links page the numbers open: its sort selector and its CSV of the current filter."""
    app = dashboard(page="links", error="auth_expired").run()
    assert not app.exception
    app.selectbox(key="links.sort").set_value("institution").run()
    assert not app.exception
    table = app.dataframe[0].value
    names = list(table["Institution"])
    assert names == sorted(names)
    assert (table["Error"] == "Login expired").all()
    downloads = app.get("download_button")
    assert len(downloads) == 1 and not downloads[0].proto.disabled
