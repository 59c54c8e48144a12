"""Connect funnel: where people give up when they link or relink a bank."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import streamlit as st

from linkdesk.read.funnel import ABANDONED_AFTER, FunnelFilters
from ui import charts
from ui.auth import require_actor
from ui.outreach import render_outreach_funnel
from ui.wiring import get_services

services = get_services()
require_actor()
funnel = services.funnel
# Counted once for every session with the same filters, and again in the background after this.
SHARED_MAX_AGE = 15.0

st.title("Connect funnel")
today = datetime.now(UTC).date()
filters_row = st.columns([1.4, 1.4, 1])
period = filters_row[0].date_input(
    "Sessions started between",
    value=(today - timedelta(days=29), today),
    key="funnel.period",
)
first_day, last_day = today - timedelta(days=29), today
if isinstance(period, tuple) and len(period) == 2:
    first_day, last_day = period
seen = funnel.banks_seen(datetime.combine(first_day, time.min, UTC), max_age=SHARED_MAX_AGE)
banks = dict(seen)
chosen = st.session_state.get("funnel.institution")
if chosen and chosen not in banks:
    banks[chosen] = chosen  # kept when the period chosen next has none of its sessions
institution = filters_row[1].selectbox(
    "Bank",
    [None, *banks],
    format_func=lambda value: "All banks" if value is None else banks.get(value, value),
    key="funnel.institution",
)
mode = filters_row[2].selectbox(
    "Mode",
    [None, "link", "relink"],
    format_func=lambda value: "Link and relink" if value is None else value,
    key="funnel.mode",
)
filters = FunnelFilters.days(first_day, last_day, institution_id=institution, mode=mode)

view = funnel.view(filters, max_age=SHARED_MAX_AGE)
summary = view.summary
if summary.started == 0:
    st.info(
        "No Connect session in this period. Sessions appear here once staff (or customers "
        "through a relink link) open MoneyKit Connect."
    )
    render_outreach_funnel(filters.since, filters.until, institution)
    st.stop()

rate = summary.completion_rate
cols = st.columns(5)
cols[0].metric("Started", summary.started)
cols[1].metric("Completed", summary.completed, help=f"{rate:.0%} of started" if rate else None)
cols[2].metric("Closed or failed at the bank", summary.exited)
cols[3].metric("Failed in Linkdesk", summary.failed)
cols[4].metric(
    "Abandoned",
    summary.abandoned,
    help=f"Started more than {int(ABANDONED_AFTER.total_seconds() // 60)} min ago with no "
    "success and no exit",
)

st.subheader("Sessions by day", divider="gray")
charts.draw(charts.sessions_by_day(view.by_day))

screens = view.screens
st.subheader("Screens", divider="gray")
if screens:
    left, right = st.columns(2)
    with left:
        st.caption("Where sessions ended without success")
        charts.draw(charts.drop_off_by_screen(screens))
    with right:
        st.caption("Time spent per screen (until the next event)")
        st.dataframe(
            [
                {
                    "Screen": row.screen,
                    "Reached": row.reached,
                    "Ended here": row.dropped,
                    "Average seconds": round(row.avg_seconds, 1)
                    if row.avg_seconds is not None
                    else None,
                    "Measured": row.samples,
                }
                for row in screens
            ],
            key="funnel.screens",
            hide_index=True,
            width="stretch",
        )
else:
    st.caption("No screen changes recorded for these sessions.")

st.subheader("Exit errors by bank", divider="gray")
exits = view.exit_errors
if exits:
    st.dataframe(
        [
            {"Bank": row.institution_name, "Error": row.error_id, "Sessions": row.sessions}
            for row in exits
        ],
        key="funnel.exits",
        hide_index=True,
        width="stretch",
    )
else:
    st.caption("No session ended with an error in this period.")

render_outreach_funnel(filters.since, filters.until, institution)
