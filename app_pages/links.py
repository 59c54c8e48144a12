"""Links: every link of the application, its institution and its health, one page at a time."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from functools import partial

import streamlit as st

from linkdesk.auth import Permission
from linkdesk.services.errors import ServiceError
from linkdesk.store.analytics import EXPORT_CAP, links_csv
from linkdesk.store.queries import Health, HealthSummary, LinkFilters, LinkSort
from ui.auth import require_actor
from ui.errors import guarded
from ui.link_detail import render_link_detail
from ui.links_table import ROW_HEIGHT, column_config, table_height, table_rows
from ui.render import (
    ERROR_LABELS,
    error_label,
    health_label,
    plain,
)
from ui.wiring import get_services, theme_is_dark

PAGE_SIZE = 50
# Counts of the whole table are shared by every session of the process and recomputed in the
# background this often (seconds); the page itself then reads only one page of rows.
SUMMARY_MAX_AGE = 30.0
# How long a first run waits for the first count before drawing the rows without the totals (a
# small store is counted in that time, so its page never flickers).
FIRST_COUNT_WAIT = 0.3
WORKER_STATUS_MAX_AGE = 5.0
# "Matching links" counts up to this many; beyond it the caption says "more than".
COUNT_CAP = 10_000
SORT_LABELS = {
    LinkSort.UPDATED_DESC: "Recently changed first",
    LinkSort.UPDATED_ASC: "Oldest change first",
    LinkSort.LINK_ID: "Link id",
    LinkSort.INSTITUTION: "Bank name",
    LinkSort.CUSTOMER: "Customer id",
    LinkSort.STATE: "State and error",
}
# Filter widgets mirror these query parameters, so a filtered view can be shared by URL.
FILTER_PARAMS = ("health", "error", "institution", "customer", "q")

services = get_services()
queries = services.links
actor = require_actor()
dark = theme_is_dark()


def _init_filters_from_url() -> None:
    for name in FILTER_PARAMS:
        key = f"links.filter.{name}"
        if key not in st.session_state:
            st.session_state[key] = st.query_params.get(name) or None


def _sync_filters_to_url() -> None:
    for name in FILTER_PARAMS:
        value = st.session_state.get(f"links.filter.{name}")
        if value:
            st.query_params[name] = value
        elif name in st.query_params:
            del st.query_params[name]
    st.session_state["links.cursors"] = [None]


def _next_page(cursor: str | None) -> None:
    # A callback runs before the script, so one click costs one run of the page (a button
    # followed by st.rerun() would run it twice).
    st.session_state["links.cursors"].append(cursor)


def _restart_paging() -> None:
    # A cursor belongs to one sort order; a new order starts again at the first page.
    st.session_state["links.cursors"] = [None]


def _show_auth_expired() -> None:
    st.session_state["links.filter.error"] = "auth_expired"
    st.session_state["links.filter.health"] = None
    _sync_filters_to_url()


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
def _worker_panel() -> None:
    """Sync and webhook lag, refreshed on its own without rerunning the page."""
    # Right after this session paused or resumed the worker, show the new state, not the shared one.
    fresh = st.session_state.pop("links.worker.changed", False)
    status = queries.worker_status(max_age=0.0 if fresh else WORKER_STATUS_MAX_AGE)
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


def _is_old(summary: HealthSummary) -> bool:
    # Past twice the age the page asks for, the count is being redone in the background (one
    # stored by an earlier process, or nobody looked for minutes).
    return datetime.now(UTC) - summary.computed_at > timedelta(seconds=2 * SUMMARY_MAX_AGE)


@st.fragment(run_every=1)
@guarded("links.counting")
def _follow_the_count(shown_at: datetime | None) -> None:
    """Beside totals that are not current: none yet while this process counts the links for the
    first time (seconds at a million links), or the count a previous process stored while this
    one counts again. The page reruns as soon as a newer count is ready; the rows below need no
    count and are current."""
    latest = queries.ready_health_summary(max_age=SUMMARY_MAX_AGE)
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


def _matching(summary: HealthSummary | None, filters: LinkFilters) -> tuple[int, bool]:
    """How many links match, and whether that is exact. No filter, or a health or an error
    filter alone, is answered by the shared summary (exact, up to 30 s old); any other
    combination is counted now, up to COUNT_CAP."""
    if summary is not None:
        if filters == LinkFilters():
            return summary.total, True
        if filters.health is not None and filters == LinkFilters(health=filters.health):
            return summary.counts[filters.health], True
        if filters.error_code and filters == LinkFilters(error_code=filters.error_code):
            return summary.errors.get(filters.error_code, 0), True
    counted = queries.count_links(filters, cap=COUNT_CAP)
    return counted, counted <= COUNT_CAP


@st.dialog("Sync every link now?")
def _confirm_sync_now(count: int) -> None:
    st.write(
        f"This queues **{count:,}** links for the sync worker, ahead of its routine work. "
        "Links already queued keep their place; a second request adds nothing."
    )
    confirm, cancel = st.columns(2)
    if confirm.button("Queue them", type="primary", width="stretch", key="sync-now.confirm"):
        try:
            touched = services.worker.trigger_sync(actor, reason="Sync now on the Links page")
        except ServiceError as refused:
            st.session_state["links.sync_now.result"] = ("warning", str(refused))
        else:
            st.session_state["links.sync_now.result"] = (
                "toast",
                f"{touched} links queued for the sync worker; watch the lag below."
                if touched
                else "Every link was already queued; nothing was added.",
            )
        st.rerun()
    if cancel.button("Cancel", width="stretch", key="sync-now.cancel"):
        st.rerun()


def _show_sync_now_result() -> None:
    result = st.session_state.pop("links.sync_now.result", None)
    if result is None:
        return
    kind, text = result
    if kind == "warning":
        st.warning(plain(text))
    else:
        st.toast(text)


def _select_row(table_key: str, shown: list[str]) -> None:
    """Selection callback: remember the chosen link by its id, read from the rows that were on
    screen when it was clicked. A row index would point at another link as soon as the list
    changes (a relinked link leaves a filtered list)."""
    event = st.session_state.get(table_key)
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(shown):
        st.query_params["link"] = shown[rows[0]]


_init_filters_from_url()
st.session_state.setdefault("links.cursors", [None])

header, action = st.columns([4, 1], vertical_alignment="bottom")
header.title("Links")
if actor.can(Permission.SYNC_TRIGGER) and action.button(
    "Sync now", icon="🔄", width="stretch", help="Queue every link for the sync worker"
):
    _confirm_sync_now(queries.count_links(LinkFilters(include_deleted=False)))
_show_sync_now_result()
# Folded away by default: the table below is what most visits are for.
with st.expander("Sync worker and webhooks", icon="⚙️"):
    _worker_panel()

summary = queries.ready_health_summary(max_age=SUMMARY_MAX_AGE, wait=FIRST_COUNT_WAIT)
if summary is not None and summary.total == 0:
    # An empty store is cheap to count; a link created a moment ago must show up at once.
    summary = queries.health_summary()
if summary is None or _is_old(summary):
    _follow_the_count(summary.computed_at if summary is not None else None)
if summary is not None:
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
        button.button("Show them", on_click=_show_auth_expired, width="stretch")

    if summary.total == 0:
        st.info(
            "No links in the store yet. The sync worker discovers every link of the application "
            "within a few minutes; you can also link a bank on the **Connect a bank** page."
        )
        st.stop()

institutions = queries.institution_names(max_age=SUMMARY_MAX_AGE)
filters_row = st.columns([1.1, 1.1, 1.2, 0.9, 1, 1.5])
filters_row[0].selectbox(
    "Health",
    [None, *Health],
    format_func=lambda value: "All" if value is None else health_label(Health(value)),
    key="links.filter.health",
    placeholder="All",
    on_change=_sync_filters_to_url,
)
filters_row[1].selectbox(
    "Error",
    [None, *ERROR_LABELS],
    format_func=lambda value: "Any" if value is None else error_label(value),
    key="links.filter.error",
    placeholder="Any",
    on_change=_sync_filters_to_url,
)
filters_row[2].selectbox(
    "Institution",
    [None, *sorted(institutions, key=lambda key: institutions[key].lower())],
    format_func=lambda value: "All" if value is None else institutions.get(value, value),
    key="links.filter.institution",
    placeholder="All",
    on_change=_sync_filters_to_url,
)
filters_row[3].text_input(
    "Customer",
    key="links.filter.customer",
    placeholder="id starts with…",
    on_change=_sync_filters_to_url,
)
filters_row[4].text_input(
    "Search",
    key="links.filter.q",
    placeholder="link id or bank name",
    on_change=_sync_filters_to_url,
)

state = st.session_state
health_value = state.get("links.filter.health")
filters = LinkFilters(
    health=Health(health_value) if health_value else None,
    error_code=state.get("links.filter.error"),
    institution_id=state.get("links.filter.institution"),
    customer=(state.get("links.filter.customer") or "").strip() or None,
    search=(state.get("links.filter.q") or "").strip() or None,
)

sort = LinkSort(
    filters_row[5].selectbox(
        "Sort by",
        list(LinkSort),
        format_func=lambda value: SORT_LABELS[LinkSort(value)],
        key="links.sort",
        on_change=_restart_paging,
    )
    or LinkSort.UPDATED_DESC
)
cursors: list[str | None] = state["links.cursors"]
page = queries.list_links(filters, limit=PAGE_SIZE, after=cursors[-1], sort=sort)
matching, exact = _matching(summary, filters)
first = (len(cursors) - 1) * PAGE_SIZE
matching_text = str(matching) if exact else f"more than {COUNT_CAP:,}"
caption, download = st.columns([4, 1], vertical_alignment="center")
caption.caption(
    f"{matching_text} matching links · "
    f"showing {first + 1 if page.rows else 0}–{first + len(page.rows)}"
    + (
        f" · the CSV holds at most the first {EXPORT_CAP:,}, narrow the filters for the rest"
        if matching > EXPORT_CAP or not exact
        else ""
    )
)
# Built only when clicked, page by page through the store in the chosen order.
download.download_button(
    "Download CSV",
    data=lambda: links_csv(queries, filters, sort=sort, cap=EXPORT_CAP).text,
    file_name="linkdesk-links.csv",
    mime="text/csv",
    icon="⬇️",
    on_click="ignore",
    disabled=matching == 0,
    key="links.download",
)

if actor.can(Permission.CUSTOMER_LINK) and matching:
    st.page_link(
        "app_pages/outreach.py",
        label="Email relink links to these customers",
        icon="📧",
        query_params={
            name: st.query_params[name] for name in FILTER_PARAMS if name in st.query_params
        },
    )
shown_ids = [row.link_id for row in page.rows]
selected_link = st.query_params.get("link")
# The table's key follows the rows on screen: when they change (a relinked link left the
# filter) the grid starts without a highlighted row instead of highlighting whichever link
# moved into the selected position.
table_key = "links.table." + hashlib.sha1("\n".join(shown_ids).encode()).hexdigest()[:16]
st.dataframe(
    table_rows(page.rows, dark=dark, outreach=services.outreach.link_stages(shown_ids)),
    key=table_key,
    hide_index=True,
    width="stretch",
    height=table_height(len(page.rows)),
    row_height=ROW_HEIGHT,
    on_select=partial(_select_row, table_key, shown_ids),
    selection_mode="single-row",
    column_config=column_config(),
)

pager = st.columns([1, 1, 6])
pager[0].button("← First page", disabled=len(cursors) == 1, on_click=_restart_paging)
pager[1].button(
    "Next page →",
    disabled=page.next_cursor is None,
    on_click=_next_page,
    args=(page.next_cursor,),
)

if selected_link:
    st.divider()
    render_link_detail(selected_link)
else:
    st.caption("Select a row to see its accounts, its history and the actions it allows.")
