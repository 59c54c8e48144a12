"""Altair charts for the overview and funnel pages.

Charts take the small, already aggregated rows of the read side; nothing here
queries. Bank colours come from outside and are re-validated before they reach the chart spec.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt

from linkdesk.read.funnel import DayCount, ScreenStat
from linkdesk.read.overview import InstitutionErrors
from linkdesk.store.analytics import TrendPoint
from linkdesk.validation import safe_hex_color
from ui.render import NEUTRAL_SWATCH

# Two series per chart, in colours that stay apart on the light and on the dark background
# (Streamlit's default palette draws both in shades of blue on the dark theme).
TREND_COLOURS = ("#f08c00", "#e03131")  # login expired: amber; any relink error: red
FUNNEL_COLOURS = ("#4c7dff", "#2f9e44")  # started: blue; completed: green


def _series_colours(domain: Sequence[str], colours: Sequence[str]) -> alt.Scale:
    return alt.Scale(domain=list(domain), range=list(colours))


def health_trend(points: Sequence[TrendPoint]) -> alt.Chart:
    values = [
        {"day": point.day.isoformat(), "series": series, "links": count}
        for point in points
        for series, count in (
            ("Login expired (auth_expired)", point.auth_expired),
            ("Needs relink (any relink error)", point.needs_relink),
        )
    ]
    return (
        alt.Chart(alt.Data(values=values))
        .mark_line(point=True)
        .encode(
            x=alt.X("day:T", title="Day (UTC, end of day)"),
            y=alt.Y("links:Q", title="Links", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color(
                "series:N",
                title=None,
                scale=_series_colours(
                    ("Login expired (auth_expired)", "Needs relink (any relink error)"),
                    TREND_COLOURS,
                ),
                legend=alt.Legend(orient="bottom", labelLimit=0),
            ),
            tooltip=["day:T", "series:N", "links:Q"],
        )
    )


def errors_by_institution(rows: Sequence[InstitutionErrors]) -> alt.Chart:
    values = [
        {
            "bank": row.name,
            "errors": row.errors,
            "links": row.links,
            "colour": safe_hex_color(row.color) or NEUTRAL_SWATCH,
        }
        for row in rows
    ]
    return (
        alt.Chart(alt.Data(values=values))
        .mark_bar()
        .encode(
            x=alt.X("errors:Q", title="Links in error", axis=alt.Axis(tickMinStep=1)),
            # Bank names are long ("Saint Lawrence Trust"); cutting them hides which bank it is.
            y=alt.Y("bank:N", title=None, sort="-x", axis=alt.Axis(labelLimit=260)),
            color=alt.Color("colour:N", scale=None, legend=None),
            tooltip=["bank:N", "errors:Q", "links:Q"],
        )
    )


def sessions_by_day(rows: Sequence[DayCount]) -> alt.Chart:
    values = [
        {"day": row.day.isoformat(), "series": series, "sessions": count}
        for row in rows
        for series, count in (("Started", row.started), ("Completed", row.completed))
    ]
    return (
        alt.Chart(alt.Data(values=values))
        .mark_line(point=True)
        .encode(
            x=alt.X("day:T", title="Day (UTC)"),
            y=alt.Y("sessions:Q", title="Sessions", axis=alt.Axis(tickMinStep=1)),
            color=alt.Color(
                "series:N",
                title=None,
                scale=_series_colours(("Started", "Completed"), FUNNEL_COLOURS),
                legend=alt.Legend(orient="bottom", labelLimit=0),
            ),
            tooltip=["day:T", "series:N", "sessions:Q"],
        )
    )


def drop_off_by_screen(rows: Sequence[ScreenStat]) -> alt.Chart:
    values = [
        {"screen": row.screen, "dropped": row.dropped, "reached": row.reached} for row in rows
    ]
    return (
        alt.Chart(alt.Data(values=values))
        .mark_bar()
        .encode(
            x=alt.X("dropped:Q", title="Sessions that ended on this screen without success"),
            y=alt.Y("screen:N", title=None, sort="-x", axis=alt.Axis(labelLimit=260)),
            tooltip=["screen:N", "reached:Q", "dropped:Q"],
        )
    )
