"""The Overview's live sections, drawn from one :class:`OverviewSnapshot`.

Each number appears once, with how it moved over the last hour where the recorded state changes
tell it exactly (links per error code and per state, links needing a relink). Every number
links to the Links list filtered to the links behind it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from linkdesk.health import Health, playbook_for
from linkdesk.read.overview import (
    BANKS_SHOWN,
    TROUBLE_WINDOW,
    HourChanges,
    OverviewSnapshot,
)
from linkdesk.read.overview_history import BrokenLink
from ui import charts
from ui.render import HEALTH_LABELS, code_span, error_label, health_label, plain

LINKS_PAGE = "app_pages/links.py"
CUSTOMER_PAGE = "app_pages/customer.py"
BROKE_TODAY_ROWS = 10
# Most urgent first; the others follow in the enum's order.
HEALTH_ORDER = (Health.NEEDS_RELINK, Health.STUCK, Health.ATTENTION, Health.WAIT, Health.STALE)
BROKE_COLUMNS = [1.3, 1.3, 2.2, 1]


def duration(value: timedelta | None) -> str:
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


def links(label: str, **query_params: str) -> None:
    st.page_link(LINKS_PAGE, label=label, icon="🔗", query_params=query_params)


def hour_delta(moved: int, changes: HourChanges) -> str | None:
    """A metric's delta: the net move over the last hour (None when nothing moved)."""
    if not moved and changes.complete:
        return None
    return f"{moved:+,} in the last hour" + ("" if changes.complete else " (at least)")


def top_row(snapshot: OverviewSnapshot, refresh_seconds: float) -> None:
    worker, changes = snapshot.worker, snapshot.changes
    st.caption(
        f"Live · refreshed every {refresh_seconds:g} s · as of "
        f"{snapshot.summary.computed_at:%H:%M:%S} UTC"
    )
    cols = st.columns(5)
    cols[0].metric(
        "Login expired",
        f"{snapshot.summary.errors.get('auth_expired', 0):,}",
        delta=hour_delta(changes.error("auth_expired"), changes),
        delta_color="inverse",
        help="Links in error auth_expired",
    )
    with cols[0]:
        links("Show them", error="auth_expired")
    in_trouble = sum(1 for bank in snapshot.banks if snapshot.in_trouble(bank))
    cols[1].metric(
        "Banks in trouble",
        in_trouble,
        help=f"Banks whose links broke in the last {TROUBLE_WINDOW.seconds // 60} min at least "
        "three times as fast as usual (the bank error spike alert's rule)",
    )
    cols[2].metric(
        "Sync lag", duration(worker.lag), help=f"{worker.jobs_due} jobs due; age of the oldest one"
    )
    cols[3].metric(
        "Webhook lag",
        duration(snapshot.webhook_lag),
        help=f"{worker.webhooks_pending} verified webhooks waiting to be applied",
    )
    cols[4].metric("Synced in the last hour", f"{worker.links_synced_last_hour:,}")
    if worker.paused:
        st.warning("The sync worker is paused: links are not being re-read.", icon="⏸️")


def banks_in_trouble(snapshot: OverviewSnapshot) -> None:
    """Banks whose links break now, against their own usual rate: where an incident shows
    first, minutes before the totals move much."""
    minutes = TROUBLE_WINDOW.seconds // 60
    with st.container(border=True, key="banks-in-trouble"):
        st.subheader("Banks in trouble now", anchor="banks-in-trouble")
        if not snapshot.banks:
            st.caption(f"No bank's links broke in the last {minutes} min more than came back.")
            return
        st.caption(
            f"Links that broke in the last {minutes} min, less those that came back, against "
            f"the bank's usual number per {minutes} min over the day before (up to "
            f"{BANKS_SHOWN} banks)."
        )
        for bank in snapshot.banks:
            flag = "🔴 **In trouble**" if snapshot.in_trouble(bank) else "🟡 Watch"
            left, right = st.columns([2, 3], vertical_alignment="center")
            with left:
                links(plain(bank.name), institution=bank.institution_id)
            right.markdown(
                f"{flag} · **{bank.net:,}** broke in {minutes} min "
                f"({bank.broke:,} broke, {bank.recovered:,} back) · usual {bank.usual:.1f}"
            )


def _why(row: BrokenLink) -> str:
    """The error in plain words: the playbook's title, else the error's label."""
    playbook = playbook_for(row.reason)
    if playbook is not None:
        return playbook.title
    return error_label(row.error_code) or row.state


def _ago(moment: datetime) -> str:
    return f"{duration(datetime.now(UTC) - moment)} ago"


def _broken_row(row: BrokenLink) -> None:
    cols = st.columns(BROKE_COLUMNS, vertical_alignment="center")
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


def broke_today(snapshot: OverviewSnapshot) -> None:
    """Links that broke since midnight, newest first; each customer opens their timeline."""
    broken = snapshot.broke_today
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
        labels = st.columns(BROKE_COLUMNS)
        for column, label in zip(
            labels, ("Customer", "Bank", "What happened", "When"), strict=True
        ):
            column.caption(f"**{label}**")
        more = st.session_state.get("overview.broke_today.more", False)
        for row in broken.links[: None if more else BROKE_TODAY_ROWS]:
            _broken_row(row)
        if broken.total > BROKE_TODAY_ROWS:
            st.toggle(
                f"Show up to {len(broken.links)} ({broken.total} in all)",
                key="overview.broke_today.more",
            )


def links_by_health(snapshot: OverviewSnapshot) -> None:
    counts, changes = snapshot.summary.counts, snapshot.changes
    st.subheader("Links by health", divider="gray")
    ordered = [*HEALTH_ORDER, *(h for h in Health if h not in HEALTH_ORDER)]
    cells = st.columns(4)
    for index, health in enumerate(ordered):
        with cells[index % 4]:
            relink = health is Health.NEEDS_RELINK
            st.metric(
                HEALTH_LABELS[health],
                f"{counts[health]:,}",
                delta=hour_delta(changes.needs_relink(), changes) if relink else None,
                delta_color="inverse",
            )
            if counts[health]:
                label = f"Open {counts[health]} {health.value.replace('_', ' ')}"
                links(label, health=health.value)
    st.caption(f"{snapshot.summary.total:,} links in all.")
    links("All links")


def states_and_errors(snapshot: OverviewSnapshot) -> None:
    changes = snapshot.changes
    left, right = st.columns(2)
    with left:
        st.subheader("Links by state", divider="gray")
        st.dataframe(
            [
                {"State": state, "Links": n, "Last hour": changes.state(state)}
                for state, n in sorted(snapshot.by_state.items(), key=lambda item: -item[1])
            ],
            hide_index=True,
            width="stretch",
        )
        if snapshot.by_error:
            st.caption("Links in state error, by error code (change in the last hour):")
            for code, n in sorted(snapshot.by_error.items(), key=lambda item: -item[1]):
                moved = changes.error(code)
                links(f"{plain(code)}: {n}" + (f" ({moved:+})" if moved else ""), error=code)
    with right:
        st.subheader("Which banks have most links in error", divider="gray")
        hurting = snapshot.errors_by_bank
        if not hurting:
            st.success("No link is in error.")
            return
        charts.draw(charts.errors_by_institution(hurting))
        for row in hurting:
            links(
                f"{plain(row.name)}: {row.errors} of {row.links} links in error",
                institution=row.institution_id,
            )
