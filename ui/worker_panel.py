"""The sync worker's panel on the Links page: its lag and queue, refreshed on its own."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from linkdesk.auth import Actor, Permission
from linkdesk.bootstrap import Services
from ui.errors import guarded
from ui.render import plain

WORKER_STATUS_MAX_AGE = 5.0


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 90 * 60:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


# Seconds as a number: Streamlit parses a string such as "10s" again on every run of the page.
@st.fragment(run_every=10)
@guarded("links.worker")
def worker_panel(services: Services, actor: Actor) -> None:
    """Sync and webhook lag, refreshed on its own without rerunning the page."""
    # Right after this session paused or resumed the worker, show the new state, not the shared one.
    fresh = st.session_state.pop("links.worker.changed", False)
    status = services.worker_progress.status(max_age=0.0 if fresh else WORKER_STATUS_MAX_AGE)
    now = status.now
    with st.container(border=True):
        cols = st.columns([1.2, 1, 1, 1, 1, 1.3])
        state = "paused" if status.paused else ("running" if status.last_run_at else "not started")
        cols[0].metric("Sync worker", state, help=f"Last round {_ago(status.last_run_at, now)}")
        lag = int(status.lag.total_seconds())
        cols[1].metric("Lag", f"{lag} s", help="Age of the oldest job that is due")
        cols[2].metric("Jobs due", status.jobs_due)
        cols[3].metric("Synced (1 h)", status.links_synced_last_hour)
        cols[4].metric(
            "Errors (1 h)",
            status.errors_last_hour,
            help=f"{status.rate_limited_last_hour} rate-limited by MoneyKit",
        )
        cols[5].metric("Webhooks queued", status.webhooks_pending)
        st.caption(
            f"Last discovery of new links {_ago(status.last_discovery_at, now)}"
            + (f" · last error: {plain(status.last_error)}" if status.last_error else "")
        )
        if suspect := status.discovery_suspect:
            st.warning(
                f"The last listing from MoneyKit lacked {suspect.get('missing')} of "
                f"{suspect.get('known')} known links and was ignored: no link was changed."
            )
        if actor.can(Permission.WORKER_CONTROL):
            if status.paused:
                if st.button("Resume the sync worker", key="worker.resume"):
                    services.worker.resume(actor)
                    st.session_state["links.worker.changed"] = True
                    st.rerun(scope="fragment")
            elif st.button("Pause the sync worker", key="worker.pause"):
                services.worker.pause(actor)
                st.session_state["links.worker.changed"] = True
                st.rerun(scope="fragment")
