"""The Links page's totals: links per verdict, the expired-login banner, and, while the shared
count is not current, a note that follows it until a newer one is ready."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from linkdesk.health import Health
from linkdesk.store.health_totals import HealthSummary, HealthTotals
from ui.errors import guarded
from ui.links_filters import show_auth_expired

# Counts of the whole table are shared by every session of the process and recomputed in the
# background this often (seconds); the page itself then reads only one page of rows.
SUMMARY_MAX_AGE = 30.0
# How long a first run waits for the first count before drawing the rows without the totals (a
# small store is counted in that time, so its page never flickers).
FIRST_COUNT_WAIT = 0.3


def _is_old(summary: HealthSummary) -> bool:
    # Past twice the age the page asks for, the count is being redone in the background (one
    # stored by an earlier process, or nobody looked for minutes).
    return datetime.now(UTC) - summary.computed_at > timedelta(seconds=2 * SUMMARY_MAX_AGE)


@st.fragment(run_every=1)
@guarded("links.counting")
def _follow_the_count(totals: HealthTotals, shown_at: datetime | None) -> None:
    """Beside totals that are not current: none yet while this process counts the links for the
    first time (seconds at a million links), or the count a previous process stored while this
    one counts again. The page reruns as soon as a newer count is ready; the rows below need no
    count and are current."""
    latest = totals.ready_health_summary(max_age=SUMMARY_MAX_AGE)
    if latest is not None and (shown_at is None or latest.computed_at > shown_at):
        st.rerun()
    if shown_at is None:
        st.info(
            "Counting the links for the totals. This takes a few seconds after a start with many "
            "links; the list below is already current.",
            icon="⏳",
        )
    else:
        st.caption(f"⏳ Totals as counted at {shown_at:%Y-%m-%d %H:%M} UTC; counting again…")


def render_totals(totals: HealthTotals) -> HealthSummary | None:
    """The totals as shared now (None while the first count is under way). Ends the page with
    a hint when the store holds no link at all."""
    summary = totals.ready_health_summary(max_age=SUMMARY_MAX_AGE, wait=FIRST_COUNT_WAIT)
    if summary is not None and summary.total == 0:
        # An empty store is cheap to count; a link created a moment ago must show up at once.
        summary = totals.health_summary()
    if summary is None or _is_old(summary):
        _follow_the_count(totals, summary.computed_at if summary is not None else None)
    if summary is None:
        return None
    counts = summary.counts
    metrics = st.columns(5)
    metrics[0].metric(
        "All links",
        summary.total,
        help=f"Counted at {summary.computed_at:%H:%M:%S} UTC, every 30 s or so",
    )
    metrics[1].metric("Healthy", counts[Health.HEALTHY])
    metrics[2].metric("Needs relink", counts[Health.NEEDS_RELINK])
    metrics[3].metric("Wait (MoneyKit retries)", counts[Health.WAIT])
    metrics[4].metric("Stuck", counts[Health.STUCK])

    expired = summary.errors.get("auth_expired", 0)
    if expired:
        alert, button = st.columns([4, 1], vertical_alignment="center")
        alert.error(f"**{expired}** links have an expired login (`auth_expired`).", icon="🔴")
        button.button("Show them", on_click=show_auth_expired, width="stretch")

    if summary.total == 0:
        st.info(
            "No links in the store yet. The sync worker discovers every link of the application "
            "within a few minutes; you can also link a bank on the **Connect a bank** page."
        )
        st.stop()
    return summary
