"""While the shared totals are not current: a note that follows the count in the background and
reruns the page as soon as a newer one is ready.

A process that has just started on a large store counts every link once (seconds at a million);
the pages draw everything that needs no count meanwhile instead of waiting for it.
"""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from linkdesk.store.health_totals import HealthTotals
from ui.errors import guarded

# How long a first run waits for the first count before drawing without the totals (a small
# store is counted in that time, so its page never flickers).
FIRST_COUNT_WAIT = 0.3


@st.fragment(run_every=1)
@guarded("counting")
def follow_the_count(
    totals: HealthTotals, shown_at: datetime | None, *, max_age: float, waiting: str
) -> None:
    """``shown_at``: when the totals on the page were counted (None: the page has none yet, and
    says ``waiting``)."""
    latest = totals.ready_health_summary(max_age=max_age)
    if latest is not None and (shown_at is None or latest.computed_at > shown_at):
        st.rerun()
    if shown_at is None:
        st.info(waiting, icon="⏳")
    else:
        st.caption(f"⏳ Totals as counted at {shown_at:%Y-%m-%d %H:%M} UTC; counting again…")
