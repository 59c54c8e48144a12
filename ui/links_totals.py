"""The Links page's totals: links per verdict, the expired-login banner, and, while the shared
count is not current, a note that follows it until a newer one is ready."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from linkdesk.health import Health
from linkdesk.store.health_totals import RECOUNT_MAX_AGE, HealthSummary, HealthTotals
from ui.counting import FIRST_COUNT_WAIT, follow_the_count
from ui.links_filters import show_auth_expired

# Counts of the whole table are shared by every session of the process and recomputed in the
# background this often (seconds); the page itself then reads only one page of rows.
SUMMARY_MAX_AGE = RECOUNT_MAX_AGE


# A count older than this is being redone in the background (one stored by an earlier process,
# or nobody looked for minutes): the page says so and follows it. Not every recount: each one
# would rerun the whole page under an agent's hands.
OLD_COUNT = timedelta(seconds=60)


def _is_old(summary: HealthSummary) -> bool:
    return datetime.now(UTC) - summary.computed_at > OLD_COUNT


def render_totals(totals: HealthTotals) -> HealthSummary | None:
    """The totals as shared now (None while the first count is under way). Ends the page with
    a hint when the store holds no link at all."""
    summary = totals.ready_health_summary(max_age=SUMMARY_MAX_AGE, wait=FIRST_COUNT_WAIT)
    if summary is not None and summary.total == 0:
        # An empty store is cheap to count; a link created a moment ago must show up at once.
        summary = totals.health_summary()
    if summary is None or _is_old(summary):
        follow_the_count(
            totals,
            summary.computed_at if summary is not None else None,
            max_age=SUMMARY_MAX_AGE,
            waiting="Counting the links for the totals. This takes a few seconds after a start "
            "with many links; the list below is already current.",
        )
    if summary is None:
        return None
    counts = summary.counts
    metrics = st.columns(5)
    metrics[0].metric(
        "All links",
        summary.total,
        help=f"Counted at {summary.computed_at:%H:%M:%S} UTC, every {SUMMARY_MAX_AGE:.0f} s or so",
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
