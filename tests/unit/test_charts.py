"""The charts' specs: the series in their colours, and no colour from outside unchecked."""

from __future__ import annotations

from datetime import date

from linkdesk.read.funnel import DayCount
from linkdesk.read.overview import InstitutionErrors, TrendPoint
from ui import charts
from ui.render import NEUTRAL_SWATCH


def test_the_trend_draws_both_series_per_day_in_their_colours() -> None:
    chart = charts.health_trend(
        [TrendPoint(date(2026, 12, 1), 3, 5), TrendPoint(date(2026, 12, 2), 1, 2)]
    )
    assert chart.data.to_pylist() == [
        {"day": "2026-12-01", "series": "Login expired (auth_expired)", "links": 3},
        {"day": "2026-12-01", "series": "Needs relink (any relink error)", "links": 5},
        {"day": "2026-12-02", "series": "Login expired (auth_expired)", "links": 1},
        {"day": "2026-12-02", "series": "Needs relink (any relink error)", "links": 2},
    ]
    colour = chart.spec["encoding"]["color"]["scale"]
    assert colour["range"] == list(charts.TREND_COLOURS)
    assert chart.spec["encoding"]["x"]["type"] == "temporal"


def test_a_hostile_bank_colour_never_reaches_the_spec() -> None:
    rows = [
        InstitutionErrors("bank-a", "Alpha", "#aa0000", 3, 4),
        InstitutionErrors("bank-b", "Beta", "red;}</style><script>", 1, 9),
    ]
    chart = charts.errors_by_institution(rows)
    assert [row["colour"] for row in chart.data.to_pylist()] == ["#aa0000", NEUTRAL_SWATCH]
    assert chart.spec["encoding"]["color"]["scale"] is None  # the colours are used as given


def test_sessions_by_day_has_a_started_and_a_completed_series() -> None:
    chart = charts.sessions_by_day([DayCount(day=date(2026, 12, 1), started=4, completed=3)])
    assert {row["series"]: row["sessions"] for row in chart.data.to_pylist()} == {
        "Started": 4,
        "Completed": 3,
    }


def test_a_bar_chart_of_no_rows_is_still_a_chart() -> None:
    chart = charts.drop_off_by_screen([])
    assert chart.data.num_rows == 0
    assert [tip["field"] for tip in chart.spec["encoding"]["tooltip"]] == [
        "screen",
        "reached",
        "dropped",
    ]
