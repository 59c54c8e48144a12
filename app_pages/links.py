"""Links: every link of the application, its institution and its health, one page at a time."""

from __future__ import annotations

import hashlib
from functools import partial

import streamlit as st

from linkdesk.auth import Permission
from linkdesk.read.export import EXPORT_CAP, links_csv
from linkdesk.read.links import matching_links
from ui.auth import require_actor
from ui.link_detail import render_link_detail
from ui.links_filters import (
    filter_widgets,
    filters_in_url,
    init_filters_from_url,
    next_page,
    page_cursors,
    restart_paging,
)
from ui.links_table import ROW_HEIGHT, column_config, table_height, table_rows
from ui.links_totals import SUMMARY_MAX_AGE, render_totals
from ui.sync_now import sync_now_button
from ui.wiring import get_services, theme_is_dark
from ui.worker_panel import worker_panel

PAGE_SIZE = 50
# "Matching links" counts up to this many; beyond it the caption says "more than".
COUNT_CAP = 10_000

services = get_services()
queries = services.links
actor = require_actor()
dark = theme_is_dark()


def _select_row(table_key: str, shown: list[str]) -> None:
    """Selection callback: remember the chosen link by its id, read from the rows that were on
    screen when it was clicked. A row index would point at another link as soon as the list
    changes (a relinked link leaves a filtered list)."""
    event = st.session_state.get(table_key)
    rows = event.selection.rows if event is not None else []
    if rows and rows[0] < len(shown):
        st.query_params["link"] = shown[rows[0]]


init_filters_from_url()

header, action = st.columns([4, 1], vertical_alignment="bottom")
header.title("Links")
sync_now_button(services, actor, action)
# Folded away by default: the table below is what most visits are for.
with st.expander("Sync worker and webhooks", icon="⚙️"):
    worker_panel(services, actor)

summary = render_totals(services.totals)
institutions = queries.institution_names(max_age=SUMMARY_MAX_AGE)
filters, sort = filter_widgets(institutions)
cursors = page_cursors()
page = queries.list_links(filters, limit=PAGE_SIZE, after=cursors[-1], sort=sort)
counted = matching_links(queries, summary, filters, cap=COUNT_CAP)
matching, exact = counted.count, counted.exact
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
        query_params=filters_in_url(),
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
pager[0].button("← First page", disabled=len(cursors) == 1, on_click=restart_paging)
pager[1].button(
    "Next page →",
    disabled=page.next_cursor is None,
    on_click=next_page,
    args=(page.next_cursor,),
)

if selected_link:
    st.divider()
    render_link_detail(selected_link)
else:
    st.caption("Select a row to see its accounts, its history and the actions it allows.")
