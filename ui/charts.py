"""Charts for the overview and funnel pages, as Vega-Lite specs with their data.

Charts take the small, already aggregated rows of the read side; nothing here queries. Bank
colours come from outside and are re-validated before they reach the chart spec. The specs are
written out rather than built with Altair: Altair validates every encoding against the whole
Vega-Lite schema on each build, which was half the Overview's rerun for four small charts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import streamlit as st

from linkdesk.read.funnel import DayCount, ScreenStat
from linkdesk.read.overview import InstitutionErrors, TrendPoint
from linkdesk.validation import safe_hex_color
from ui.render import NEUTRAL_SWATCH

# Two series per chart, in colours that stay apart on the light and on the dark background
# (Streamlit's default palette draws both in shades of blue on the dark theme).
TREND_COLOURS = ("#f08c00", "#e03131")  # login expired: amber; any relink error: red
FUNNEL_COLOURS = ("#4c7dff", "#2f9e44")  # started: blue; completed: green


@dataclass(frozen=True, slots=True)
class Chart:
    """What ``st.vega_lite_chart`` draws: the rows (Arrow, as Streamlit ships them) and the spec."""

    data: pa.Table
    spec: dict[str, Any]


def _field(name: str, kind: str, title: str | None = None, **more: Any) -> dict[str, Any]:
    return {"field": name, "type": kind, "title": title, **more}


def _two_series_lines(
    values: list[dict[str, Any]], *, x_title: str, y: str, y_title: str, series: Sequence[str],
    colours: Sequence[str],
) -> Chart:  # fmt: skip
    return Chart(
        pa.Table.from_pylist(values),
        {
            "mark": {"type": "line", "point": True},
            "encoding": {
                "x": _field("day", "temporal", x_title),
                "y": _field(y, "quantitative", y_title, axis={"tickMinStep": 1}),
                "color": _field(
                    "series",
                    "nominal",
                    scale={"domain": list(series), "range": list(colours)},
                    legend={"orient": "bottom", "labelLimit": 0},
                ),
                "tooltip": [
                    _field("day", "temporal", "day"),
                    _field("series", "nominal", "series"),
                    _field(y, "quantitative", y),
                ],
            },
        },
    )


def health_trend(points: Sequence[TrendPoint]) -> Chart:
    series = ("Login expired (auth_expired)", "Needs relink (any relink error)")
    values = [
        {"day": point.day.isoformat(), "series": name, "links": count}
        for point in points
        for name, count in zip(series, (point.auth_expired, point.needs_relink), strict=True)
    ]
    return _two_series_lines(
        values,
        x_title="Day (UTC, end of day)",
        y="links",
        y_title="Links",
        series=series,
        colours=TREND_COLOURS,
    )


def _bars(
    values: list[dict[str, Any]], *, x: dict[str, Any], label: str, counts: Sequence[str],
    **more: dict[str, Any],
) -> Chart:  # fmt: skip
    """Horizontal bars, longest first, one per ``label`` (names are long: "Saint Lawrence
    Trust"; cutting them hides which one it is). The tooltip: the label and the ``counts``."""
    return Chart(
        pa.Table.from_pylist(values),
        {
            "mark": {"type": "bar"},
            "encoding": {
                "x": x,
                "y": _field(label, "nominal", None, sort="-x", axis={"labelLimit": 260}),
                "tooltip": [
                    _field(label, "nominal", label),
                    *(_field(name, "quantitative", name) for name in counts),
                ],
                **more,
            },
        },
    )


def errors_by_institution(rows: Sequence[InstitutionErrors]) -> Chart:
    values = [
        {
            "bank": row.name,
            "errors": row.errors,
            "links": row.links,
            "colour": safe_hex_color(row.color) or NEUTRAL_SWATCH,
        }
        for row in rows
    ]
    return _bars(
        values,
        x=_field("errors", "quantitative", "Links in error", axis={"tickMinStep": 1}),
        label="bank",
        counts=("errors", "links"),
        color=_field("colour", "nominal", scale=None, legend=None),
    )


def sessions_by_day(rows: Sequence[DayCount]) -> Chart:
    series = ("Started", "Completed")
    values = [
        {"day": row.day.isoformat(), "series": name, "sessions": count}
        for row in rows
        for name, count in zip(series, (row.started, row.completed), strict=True)
    ]
    return _two_series_lines(
        values,
        x_title="Day (UTC)",
        y="sessions",
        y_title="Sessions",
        series=series,
        colours=FUNNEL_COLOURS,
    )


def drop_off_by_screen(rows: Sequence[ScreenStat]) -> Chart:
    values = [
        {"screen": row.screen, "dropped": row.dropped, "reached": row.reached} for row in rows
    ]
    return _bars(
        values,
        x=_field("dropped", "quantitative", "Sessions that ended on this screen without success"),
        label="screen",
        counts=("reached", "dropped"),
    )


def draw(chart: Chart) -> None:
    """The chart across the width of its column."""
    st.vega_lite_chart(chart.data, chart.spec, width="stretch")
