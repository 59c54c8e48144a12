"""Overview, the landing page: what broke today, how the links are doing, where to look first.

Everything that moves minute by minute (the totals, the banks in trouble, "Broke today", the
links by health, state, error and bank) is one fragment that refreshes itself every
``LINKDESK_OVERVIEW_REFRESH_SECONDS`` without rerunning the page, from one snapshot shared by
every open session (linkdesk.read.overview). The period aggregates below it move slowly and are
computed once a minute.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.read.overview_history import RelinkStats
from linkdesk.store.health_totals import RECOUNT_MAX_AGE
from ui import charts
from ui import overview as sections
from ui.auth import require_actor
from ui.counting import FIRST_COUNT_WAIT, follow_the_count
from ui.errors import guarded
from ui.wiring import get_services

services = get_services()
require_actor()
REFRESH_SECONDS = services.settings.overview_refresh_seconds
# The snapshot is computed at most this often for every open session together; staff actions and
# applied webhooks move its totals at once.
SHARED_MAX_AGE = min(5.0, REFRESH_SECONDS)
STORE = services.settings.database_url  # cache key: one entry per store, never shared across


@st.cache_data(ttl=60, show_spinner=False)
def _relink_stats(store: str, days: int) -> RelinkStats:
    return services.overview_history.relink_stats(days)


@st.fragment(run_every=REFRESH_SECONDS)
@guarded("overview.live")
def _live() -> None:
    snapshot = services.overview.snapshot(max_age=SHARED_MAX_AGE)
    with st.container(key="overview-live"):
        sections.top_row(snapshot, REFRESH_SECONDS)
        if snapshot.summary.total == 0:
            st.info(
                "No links in the store yet, so there is nothing to chart. The sync worker "
                "discovers every link of the application within a few minutes of starting; "
                "support can also link a bank on the **Connect a bank** page. This page fills "
                "in by itself."
            )
            return
        sections.banks_in_trouble(snapshot)
        sections.broke_today(snapshot)
        sections.links_by_health(snapshot)
        sections.states_and_errors(snapshot)


def _relinks() -> None:
    st.subheader("Relinks (last 30 days)", divider="gray")
    with st.spinner("Measuring relinks…"):
        relinks = _relink_stats(STORE, 30)
    rate = relinks.success_rate
    cols = st.columns(3)
    cols[0].metric("Relinks started", relinks.started)
    cols[1].metric("Success rate", f"{rate:.0%}" if rate is not None else "—")
    cols[2].metric(
        "Median repair",
        sections.duration(relinks.median_repair),
        help="From the link breaking (its last change into a relink error) to the relink "
        f"that fixed it; {relinks.repaired} repairs measured.",
    )
    if relinks.started == 0:
        st.caption("No relink in the last 30 days.")
    else:
        st.caption(
            f"{relinks.succeeded} succeeded · {relinks.exited} closed by the customer · "
            f"{relinks.failed} failed · {relinks.pending} still open."
        )


def _trend() -> None:
    st.subheader("Broken links over time", divider="gray")
    days = st.segmented_control(
        "Period", [7, 30, 90], default=30, format_func=lambda d: f"{d} days", key="overview.days"
    )
    trend = services.overview.trend(int(days or 30))
    if any(point.auth_expired or point.needs_relink for point in trend):
        charts.draw(charts.health_trend(trend))
    else:
        st.caption("No link needed a relink during this period.")
    st.caption(
        "Links in each condition at the end of each day: today's count, less the recorded "
        "state changes of each day after."
    )


st.title("Overview")
summary = services.totals.ready_health_summary(max_age=RECOUNT_MAX_AGE, wait=FIRST_COUNT_WAIT)
if summary is None:
    # The first count of a process that has just started (seconds at a million links): the
    # page follows it instead of waiting for it.
    follow_the_count(
        services.totals,
        None,
        max_age=RECOUNT_MAX_AGE,
        waiting="Counting the links for the Overview. This takes a few seconds after a start "
        "with many links; the page fills in by itself.",
    )
    st.stop()
_live()
if summary.total:
    _relinks()
    _trend()
