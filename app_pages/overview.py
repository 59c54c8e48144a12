"""Overview, the landing page: what broke today, how the links are doing, where to look first.

"Broke today" lists the customers whose links moved into a broken verdict since midnight (UTC);
each opens the customer's timeline, which says why and offers the repair. Every number below
links to the Links list filtered to the links behind it, so an operator goes from "14 need a
relink" to those 14 rows in one click.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from linkdesk.health import playbook_for
from linkdesk.store.analytics import Analytics, BrokenLink, RelinkStats, TrendPoint
from linkdesk.store.queries import Health
from ui import charts
from ui.auth import require_actor
from ui.errors import guarded
from ui.render import HEALTH_LABELS, code_span, error_label, health_label, plain
from ui.wiring import get_services

LINKS_PAGE = "app_pages/links.py"
CUSTOMER_PAGE = "app_pages/customer.py"
BROKE_TODAY_ROWS = 10
BROKE_TODAY_MORE = 100
# Most urgent first; the others follow in the enum's order.
HEALTH_ORDER = (Health.NEEDS_RELINK, Health.STUCK, Health.ATTENTION, Health.WAIT, Health.STALE)

services = get_services()
queries = services.links
require_actor()
analytics = Analytics(services.store, thresholds=queries.thresholds)
# Counts over every link are computed once per this many seconds for all open sessions, not per
# rerun of each (see LinkQueries.health_summary); the live panel refreshes every 15 s.
SHARED_MAX_AGE = 5.0
STORE = services.settings.database_url  # cache key: one entry per store, never shared across


# Aggregates over a period move slowly: computed once a minute for every open session, not on
# each rerun of each session. The "now" numbers above them stay live.
@st.cache_data(ttl=60, show_spinner=False)
def _relink_stats(store: str, days: int) -> RelinkStats:
    return analytics.relink_stats(days)


@st.cache_data(ttl=60, show_spinner=False)
def _health_trend(store: str, days: int) -> list[TrendPoint]:
    return analytics.health_trend(days)


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _links(label: str, **query_params: str) -> None:
    st.page_link(LINKS_PAGE, label=label, icon="🔗", query_params=query_params)


def _ago(moment: datetime) -> str:
    return f"{_duration(datetime.now(UTC) - moment)} ago"


def _why(row: BrokenLink) -> str:
    """The error in plain words: the playbook's title, else the error's label."""
    playbook = playbook_for(row.reason)
    if playbook is not None:
        return playbook.title
    return error_label(row.error_code) or row.state


def _broken_row(row: BrokenLink) -> None:
    cols = st.columns([1.3, 1.3, 2.2, 1], vertical_alignment="center")
    with cols[0]:
        if row.customer_id:
            st.page_link(
                CUSTOMER_PAGE,
                label=plain(row.customer_id),
                icon="👤",
                query_params={"customer": row.customer_id},
                help="Open this customer's timeline: why it broke, and the repair",
            )
        else:  # made without a customer tag: the link's own page is the place to look
            st.page_link(
                LINKS_PAGE,
                label="no customer",
                icon="🔗",
                query_params={"link": row.link_id},
                help=f"Open link {plain(row.link_id)}",
            )
    cols[1].markdown(plain(row.institution_name))
    cols[2].markdown(
        f"{health_label(row.health)} · **{plain(_why(row))}**"
        + (f" · {code_span(row.error_code)}" if row.error_code else "")
    )
    cols[3].markdown(f"{row.broke_at:%H:%M} UTC · {_ago(row.broke_at)}")


def _broke_today() -> None:
    """Links that broke since midnight, newest first; each customer opens their timeline."""
    show_more = st.session_state.get("overview.broke_today.more", False)
    with st.spinner("Looking for links that broke today…"):
        broken = analytics.broke_today(BROKE_TODAY_MORE if show_more else BROKE_TODAY_ROWS)
    with st.container(border=True, key="broke-today"):
        header, count = st.columns([3, 2], vertical_alignment="bottom")
        header.subheader("Broke today", anchor="broke-today")
        if broken.total == 0:
            count.caption(f"since {broken.since:%d %b} 00:00 UTC")
            st.success(
                "No link broke today. Links that need a relink from earlier days are counted "
                "below.",
                icon="✅",
            )
            return
        count.caption(
            f"**{broken.total}** link{'s' if broken.total != 1 else ''} of "
            f"**{broken.customers}** customer{'s' if broken.customers != 1 else ''} since "
            f"{broken.since:%d %b} 00:00 UTC"
        )
        st.caption(
            "Newest first. Open a customer to see why the link broke and to start the repair."
        )
        labels = st.columns([1.3, 1.3, 2.2, 1])
        for column, label in zip(
            labels, ("Customer", "Bank", "What happened", "When"), strict=True
        ):
            column.caption(f"**{label}**")
        for row in broken.links:
            _broken_row(row)
        if broken.total > BROKE_TODAY_ROWS:
            st.toggle(
                f"Show up to {BROKE_TODAY_MORE} ({broken.total} in all)",
                key="overview.broke_today.more",
            )


@st.fragment(run_every="15s")
@guarded("overview.live")
def _live_panel() -> None:
    """The numbers that move minute by minute, refreshed without rerunning the page."""
    summary = queries.health_summary(max_age=SHARED_MAX_AGE)
    counts = summary.counts
    expired = summary.errors.get("auth_expired", 0)
    status = queries.worker_status(max_age=SHARED_MAX_AGE)
    webhook_lag = analytics.webhook_lag()
    with st.container(border=True, key="overview-live"):
        st.caption("Live · refreshed every 15 s")
        cols = st.columns(5)
        cols[0].metric("Needs relink", counts[Health.NEEDS_RELINK])
        with cols[0]:
            _links("Show them", health=Health.NEEDS_RELINK.value)
        cols[1].metric("Login expired", expired, help="Links in error auth_expired")
        with cols[1]:
            _links("Show them", error="auth_expired")
        cols[2].metric(
            "Sync lag",
            _duration(status.lag),
            help=f"{status.jobs_due} jobs due; age of the oldest one",
        )
        cols[3].metric(
            "Webhook lag",
            _duration(webhook_lag),
            help=f"{status.webhooks_pending} verified webhooks waiting to be applied",
        )
        cols[4].metric("Synced in the last hour", status.links_synced_last_hour)
        if status.paused:
            st.warning("The sync worker is paused: links are not being re-read.", icon="⏸️")


st.title("Overview")
_live_panel()

counts = queries.health_summary(max_age=SHARED_MAX_AGE).counts
total = sum(counts.values())
if total == 0:
    st.info(
        "No links in the store yet, so there is nothing to chart. The sync worker discovers "
        "every link of the application within a few minutes of starting; support can also link "
        "a bank on the **Connect a bank** page. This page fills in by itself."
    )
    st.stop()
_broke_today()

st.subheader("Links by health", divider="gray")
ordered = [*HEALTH_ORDER, *(h for h in Health if h not in HEALTH_ORDER)]
cells = st.columns(4)
for index, health in enumerate(ordered):
    with cells[index % 4]:
        st.metric(HEALTH_LABELS[health], counts[health])
        if counts[health]:
            _links(f"Open {counts[health]} {health.value.replace('_', ' ')}", health=health.value)
st.caption(f"{total} links in all.")
_links("All links")

left, right = st.columns(2)
with left:
    st.subheader("Links by state", divider="gray")
    by_state = queries.counts_by_state()
    st.dataframe(
        [
            {"State": state, "Links": n}
            for state, n in sorted(by_state.items(), key=lambda item: -item[1])
        ],
        hide_index=True,
        width="stretch",
    )
    by_error = queries.counts_by_error()
    if by_error:
        st.caption("Links in state error, by error code:")
        for code, n in sorted(by_error.items(), key=lambda item: -item[1]):
            if code:
                _links(f"{plain(code)}: {n}", error=code)
with right:
    st.subheader("Relinks (last 30 days)", divider="gray")
    with st.spinner("Measuring relinks…"):
        relinks = _relink_stats(STORE, 30)
    rate = relinks.success_rate
    cols = st.columns(3)
    cols[0].metric("Relinks started", relinks.started)
    cols[1].metric("Success rate", f"{rate:.0%}" if rate is not None else "—")
    cols[2].metric(
        "Median repair",
        _duration(relinks.median_repair),
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
    _links(f"Links that need a relink now: {counts[Health.NEEDS_RELINK]}", health="needs_relink")

st.subheader("Broken links over time", divider="gray")
days = st.segmented_control(
    "Period", [7, 30, 90], default=30, format_func=lambda d: f"{d} days", key="overview.days"
)
with st.spinner("Replaying the state changes of the period…"):
    trend = _health_trend(STORE, int(days or 30))
if any(point.auth_expired or point.needs_relink for point in trend):
    st.altair_chart(charts.health_trend(trend), width="stretch")
else:
    st.caption("No link needed a relink during this period.")
st.caption(
    "Counted from the recorded state changes: links in each condition at the end of each day."
)

st.subheader("Which banks are hurting now", divider="gray")
with st.spinner("Counting errors by bank…"):
    hurting = analytics.errors_by_institution(10)
if hurting:
    st.altair_chart(charts.errors_by_institution(hurting), width="stretch")
    for row in hurting:
        _links(
            f"{plain(row.name)}: {row.errors} of {row.links} links in error",
            institution=row.institution_id,
        )
else:
    st.success(f"No link is in error. {health_label(Health.HEALTHY)}: {counts[Health.HEALTHY]}.")
