"""The Overview page, drawn headless from the store discovery filled (and from an empty one)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pyarrow as pa
import pytest
import sqlalchemy as sa
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash

from linkdesk.auth import Role
from linkdesk.health import Health
from linkdesk.store import Store, create_engine
from linkdesk.store.health_totals import HealthTotals
from linkdesk.store.models import Institution, Link, LinkStateChange
from tests.app.conftest import as_shown, dashboard
from tests.app.test_customer_page import open_private_store
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


def trend_chart(app: AppTest) -> object:
    """The chart of broken links per day (the other one, of banks in error, has no days)."""
    return next(chart for chart in charts(app) if "day" in chart_rows(chart)[0])


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
    counts = HealthTotals(Store(create_engine(app_env))).counts_by_health()
    assert int(str(expired)) > 0
    assert metric(app, "Login expired") == str(expired)
    assert metric(app, "🔴 Needs relink") == str(counts[Health.NEEDS_RELINK])
    assert metric(app, "✅ Healthy") == str(counts[Health.HEALTHY])
    # Each number once: the verdicts are shown in "Links by health" only.
    labels = [m.label for m in app.metric]
    assert len(labels) == len(set(labels))
    assert not any("Needs relink" in label for label in labels if label != "🔴 Needs relink")

    links = page_links(app)
    assert ("Show them", {"error": ["auth_expired"]}) in links
    assert (
        f"Open {counts[Health.NEEDS_RELINK]} needs relink",
        {"health": ["needs_relink"]},
    ) in links
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
    by_bank = {
        label: params
        for label, params in page_links(app)
        if "institution" in params and label.endswith(" links in error")
    }
    assert len(by_bank) == len(top)
    for institution_id, name, errors in top:
        label = next(label for label in by_bank if label.startswith(f"{name}: {errors} of "))
        assert by_bank[label] == {"institution": [str(institution_id)]}
    assert len(charts(app)) == 2  # the trend and the banks in error


def test_the_period_changes_the_trend_window(app_env: str) -> None:
    app = overview()
    rows = chart_rows(trend_chart(app))
    assert len({row["day"] for row in rows}) == 30
    # Today's point is the number of links in auth_expired now: the "Login expired" tile's.
    (today_expired,) = sql(
        app_env,
        "SELECT count(*) FROM links WHERE state = 'error' AND error_code = 'auth_expired'",
    )[0]
    last_day = max(str(row["day"]) for row in rows)
    assert [
        r["links"] for r in rows if str(r["day"]) == last_day and "auth" in str(r["series"])
    ] == [today_expired]
    assert metric(app, "Login expired") == str(today_expired)
    app.button_group(key="overview.days").set_value(7).run()
    assert not app.exception
    assert len({row["day"] for row in chart_rows(trend_chart(app))}) == 7


def test_an_empty_store_gets_a_helpful_message_and_no_chart(
    app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_services.clear()
    app = overview()
    assert any("No links in the store yet" in info.value for info in app.info)
    assert not charts(app)
    assert metric(app, "Login expired") == "0"
    assert metric(app, "Banks in trouble") == "0"


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


@pytest.fixture()
def private_store(app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    yield from open_private_store(app_env, tmp_path, monkeypatch)


def break_links(store: Store, institution_id: str, count: int, at: datetime) -> None:
    """``count`` of the bank's links enter auth_expired at ``at``, as state changes record it."""
    with store.write() as session:
        link_ids = session.scalars(
            sa.select(Link.link_id)
            .where(Link.institution_id == institution_id)
            .order_by(Link.link_id)
            .limit(count)
        ).all()
        assert len(link_ids) == count
        for link_id in link_ids:
            session.add(
                LinkStateChange(
                    link_id=link_id,
                    at=at,
                    from_state="connected",
                    from_error=None,
                    to_state="error",
                    to_error="auth_expired",
                    source="webhook",
                )
            )


def test_a_bank_breaking_now_is_in_trouble_and_the_numbers_say_how_they_moved(
    private_store: Store,
) -> None:
    with private_store.read() as session:
        banks = session.execute(
            sa.select(Link.institution_id, Institution.name, sa.func.count())
            .join(Institution, Institution.institution_id == Link.institution_id)
            .group_by(Link.institution_id, Institution.name)
            .order_by(sa.func.count().desc(), Link.institution_id)
        ).all()
    (failing, failing_name, size), (watched, watched_name, _) = banks[0], banks[1]
    assert size >= 6
    now = datetime.now(UTC)
    break_links(private_store, failing, 6, now - timedelta(minutes=2))
    break_links(private_store, watched, 1, now - timedelta(minutes=3))

    app = overview()
    assert metric(app, "Banks in trouble") == "1"
    tile = app.get("page_link")
    in_tile = [
        (as_shown(link.proto.label), parse_qs(link.proto.query_string))
        for link in tile
        if parse_qs(link.proto.query_string).keys() == {"institution"}
    ]
    # The failing bank first and flagged, the other one watched; each opens its links.
    assert in_tile[:2] == [
        (failing_name, {"institution": [failing]}),
        (watched_name, {"institution": [watched]}),
    ]
    lines = [as_shown(m.value) for m in app.markdown if "broke in 15 min" in m.value]
    assert lines[0].startswith("🔴 **In trouble** · **6** broke in 15 min (6 broke, 0 back)")
    assert lines[1].startswith("🟡 Watch · **1** broke in 15 min")

    # How "Login expired" moved over the last hour, counted in SQL from the same history
    # (discovery's first sight of each link, moments ago, counts as entering its group).
    since = (now - timedelta(hours=1)).isoformat(sep=" ")
    (entered, left) = sql(
        str(private_store.engine.url),
        "SELECT sum(CASE WHEN to_state = 'error' AND to_error = 'auth_expired' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN from_state = 'error' AND from_error = 'auth_expired' THEN 1 ELSE 0 END)"
        f" FROM link_state_changes WHERE at >= '{since}'",
    )[0]
    moved = int(str(entered)) - int(str(left or 0))
    assert moved >= 7
    expired = next(m for m in app.metric if m.label == "Login expired")
    assert expired.delta == f"{moved:+,} in the last hour"


def test_while_the_first_count_runs_the_page_says_so_and_fills_in_after(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process that has just started on a large store, with no count stored: the Overview must
    # not wait seconds for it.
    monkeypatch.setattr(HealthTotals, "ready_health_summary", lambda *_a, **_k: None)
    app = overview()
    assert not app.exception
    assert any("Counting the links for the Overview" in info.value for info in app.info)
    assert not [m for m in app.metric if m.label == "Login expired"]
    assert not charts(app)

    monkeypatch.undo()  # the count is ready: the next run shows every number
    app.run()
    assert not app.exception
    (expired,) = sql(app_env, "SELECT count(*) FROM links WHERE error_code = 'auth_expired'")[0]
    assert metric(app, "Login expired") == f"{expired:,}"
    assert not any("Counting the links" in info.value for info in app.info)
