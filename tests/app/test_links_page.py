"""The Links page, drawn headless from a store that discovery filled."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from streamlit.testing.v1 import AppTest

from linkdesk.health import Health
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine
from linkdesk.store.health_totals import HealthTotals
from linkdesk.store.models import Institution, Link
from linkdesk.store.repository import link_moved
from tests.app.conftest import dashboard


def queries(database_url: str) -> LinkQueries:
    return LinkQueries(Store(create_engine(database_url)))


def metric(app: AppTest, label: str) -> str:
    return next(m.value for m in app.metric if m.label == label)


def test_links_page_lists_discovered_links_with_logo_colour_and_flags(app_env: str) -> None:
    app = dashboard(page="links").run()
    assert not app.exception

    counts = queries(app_env).totals.counts_by_health()
    assert metric(app, "All links") == str(sum(counts.values()))
    assert metric(app, "Needs relink") == str(counts[Health.NEEDS_RELINK])
    assert counts[Health.NEEDS_RELINK] > 0

    table = app.dataframe[0].value
    assert len(table) == 50  # one page, never the whole table
    # The brand colour frames the logo instead of taking a column of its own.
    assert list(table.columns) == [
        "Logo",
        "Institution",
        "Health",
        "Error",
        "Customer",
        "Link ID",
        "Last update",
    ]
    assert table["Logo"].str.startswith("data:image/svg+xml").all()
    assert table["Logo"].str.contains("stroke%3D%27%23").all()
    assert table["Customer"].str.startswith("cust_").all()
    assert any(error == "Login expired" for error in table["Error"])


def test_while_the_first_count_runs_the_rows_are_drawn_and_the_totals_follow(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process that has just started on a large store, with no recent count stored: the count
    # takes seconds, and the page must not wait for it.
    monkeypatch.setattr(HealthTotals, "ready_health_summary", lambda *_a, **_k: None)
    app = dashboard(page="links").run()
    assert not app.exception
    assert not [m for m in app.metric if m.label == "All links"]
    assert any("Counting the links" in info.value for info in app.info)
    assert len(app.dataframe[0].value) == 50
    total = queries(app_env).count_links()
    assert any(f"{total} matching links" in c.value for c in app.caption)  # counted apart

    monkeypatch.undo()  # the count is ready: the next run shows the totals
    app.run()
    assert metric(app, "All links") == str(total)
    assert not any("Counting the links" in info.value for info in app.info)


def test_totals_stored_by_an_earlier_process_are_shown_with_their_time_until_recounted(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = queries(app_env).totals.health_summary()
    counted_at = datetime.now(UTC) - timedelta(minutes=20)
    stored = replace(current, counts=dict.fromkeys(Health, 1), computed_at=counted_at)
    monkeypatch.setattr(HealthTotals, "ready_health_summary", lambda *_a, **_k: stored)
    app = dashboard(page="links").run()
    assert not app.exception
    assert metric(app, "All links") == str(len(Health))  # what was stored, said to be so
    assert any(f"counted at {counted_at:%Y-%m-%d %H:%M} UTC" in c.value for c in app.caption)

    monkeypatch.undo()
    app.run()
    assert metric(app, "All links") == str(current.total)
    assert not any("counting again" in c.value for c in app.caption)


def test_a_count_a_few_recounts_old_is_shown_without_following_it(
    app_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recounts run every few seconds; following each would rerun the page under the agent's
    # hands (a click on "Show them" lost to the rerun). Only a really old count is followed.
    current = queries(app_env).totals.health_summary()
    recent = replace(current, computed_at=datetime.now(UTC) - timedelta(seconds=30))
    monkeypatch.setattr(HealthTotals, "ready_health_summary", lambda *_a, **_k: recent)
    app = dashboard(page="links").run()
    assert not app.exception
    assert not any("counting again" in c.value for c in app.caption)


def test_filtering_on_auth_expired_shows_only_expired_links(app_env: str) -> None:
    expected = queries(app_env).count_links(LinkFilters(error_code="auth_expired"))
    assert 0 < expected < 50

    app = dashboard(page="links").run()
    app.selectbox(key="links.filter.error").set_value("auth_expired").run()
    assert not app.exception

    table = app.dataframe[0].value
    assert len(table) == expected
    assert (table["Error"] == "Login expired").all()
    assert (table["Health"] == "🔴 Needs relink").all()
    assert app.query_params["error"] in ("auth_expired", ["auth_expired"])
    assert any(f"{expected} matching links" in caption.value for caption in app.caption)


def test_the_auth_expired_banner_button_applies_the_filter(app_env: str) -> None:
    app = dashboard(page="links").run()
    app.button[[b.label for b in app.button].index("Show them")].click().run()
    table = app.dataframe[0].value
    assert (table["Error"] == "Login expired").all()


def test_a_shared_url_restores_the_filters(app_env: str) -> None:
    app = dashboard(page="links", error="auth_expired").run()
    assert app.selectbox(key="links.filter.error").value == "auth_expired"
    assert (app.dataframe[0].value["Error"] == "Login expired").all()


def test_next_page_continues_where_the_first_page_ended(app_env: str) -> None:
    app = dashboard(page="links").run()
    first = list(app.dataframe[0].value["Link ID"])
    app.button[[b.label for b in app.button].index("Next page →")].click().run()
    second = list(app.dataframe[0].value["Link ID"])
    assert len(second) == 50
    assert not set(first) & set(second)


def test_link_detail_offers_relink_only_when_the_link_needs_it(app_env: str) -> None:
    store_queries = queries(app_env)
    expired = store_queries.list_links(LinkFilters(error_code="auth_expired"), limit=1).rows[0]
    healthy = store_queries.list_links(LinkFilters(health=Health.HEALTHY), limit=1).rows[0]

    app = dashboard(page="links", link=expired.link_id).run()
    assert not app.exception
    assert "Relink" in [button.label for button in app.button]
    assert any(expired.institution_name in element.proto.body for element in app.get("html"))

    app = dashboard(page="links", link=healthy.link_id).run()
    assert "Relink" not in [button.label for button in app.button]


def test_hostile_institution_data_is_escaped_and_colours_validated(app_env: str) -> None:
    store = Store(create_engine(app_env))
    now = datetime.now(UTC)
    with store.write() as session:
        session.add(
            Institution(
                institution_id="hostile-bank",
                name="<script>alert('x')</script> Bank",
                country="US",
                color="red;background:url(https://evil.example)",
                color_dark="#12345",
                logo="javascript:alert(1)",
            )
        )
        session.add(
            Link(
                link_id="mk_hostile_link",
                institution_id="hostile-bank",
                state="error",
                error_code="auth_expired",
                provider="moneykit",
                tags=[],
                created_at=now,
                discovered_at=now,
                updated_at=now,
            )
        )
        link_moved(session, None, ("error", "auth_expired", "hostile-bank"))
    app = dashboard(page="links", link="mk_hostile_link").run()
    assert not app.exception
    card = next(element.proto.body for element in app.get("html"))
    assert "<script>" not in card
    assert "&lt;script&gt;" in card
    assert "evil.example" not in card
    assert "javascript:" not in card


def test_a_links_history_draws_only_its_open_tab(app_env: str) -> None:
    expired = queries(app_env).list_links(LinkFilters(error_code="auth_expired"), limit=1).rows[0]
    app = dashboard(page="links", link=expired.link_id).run()
    assert not app.exception
    history = ["State history", "Connect sessions", "Sync attempts", "Webhooks", "Audit and notes"]
    assert [tab.label for tab in app.tabs] == history
    assert "Add a note" not in [area.label for area in app.text_area]  # its tab is closed
    app.session_state["link.history_tab"] = "Audit and notes"  # as choosing the tab does
    app.run()
    assert not app.exception
    assert "Add a note" in [area.label for area in app.text_area]
