"""Customer timeline: everything that happened to one customer's bank links, newest first.

Support opens it from a ticket (`?customer=<id>`) and sees Connect sessions and their screens,
exchanges and relinks, state changes, webhooks, sync results and staff actions in one list.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.store.analytics import TIMELINE_KINDS
from ui.auth import require_actor
from ui.link_detail import relink_started_here, render_repair_panel
from ui.outreach import render_customer_outreach
from ui.render import plain
from ui.wiring import get_services

PAGE_SIZE = 50
# A customer rarely has more than a few links; past this many the Links page lists them all.
MAX_REPAIR_PANELS = 5
KIND_LABELS = {
    "session": "Connect sessions",
    "event": "Connect screens and events",
    "exchange": "Links and relinks",
    "state": "State changes",
    "webhook": "Webhooks",
    "sync": "Sync results",
    "staff": "Staff actions",
}
KIND_ICONS = {
    "session": "🪟",
    "event": "👆",
    "exchange": "🔗",
    "state": "🔀",
    "webhook": "📨",
    "sync": "🔄",
    "staff": "🧑‍💼",
}

services = get_services()
queries = services.links
actor = require_actor()
analytics = services.analytics
state = st.session_state


def _kind_label(kind: str) -> str:
    return f"{KIND_ICONS.get(kind, '')} {KIND_LABELS.get(kind, kind)}".strip()


def _reset_paging() -> None:
    state["customer.cursors"] = [None]


def _choose(customer_id: str | None) -> None:
    if customer_id:
        st.query_params["customer"] = customer_id
    elif "customer" in st.query_params:
        del st.query_params["customer"]
    _reset_paging()


st.title("Customer timeline")
state.setdefault("customer.cursors", [None])
customer = (st.query_params.get("customer") or "").strip()

search_col, pick_col = st.columns([1, 2])
prefix = search_col.text_input(
    "Find a customer", key="customer.search", placeholder="customer id starts with…"
)
matches = queries.list_customers(prefix.strip(), limit=50)
options = [row.customer_id for row in matches]
if customer and customer not in options:
    options.insert(0, customer)
counts = {row.customer_id: row for row in matches}
picked = pick_col.selectbox(
    "Customer",
    options,
    index=options.index(customer) if customer in options else None,
    placeholder="Pick a customer",
    format_func=lambda cid: (
        f"{cid} · {counts[cid].link_count} link{'s' if counts[cid].link_count != 1 else ''}"
        + (f" · {counts[cid].needs_relink} need a relink" if counts[cid].needs_relink else "")
        if cid in counts
        else cid
    ),
    key=f"customer.pick.{customer}",
)
if picked != (customer or None):
    _choose(picked)
    st.rerun()

if not customer:
    if not options:
        st.info("No customer matches. Customers appear once one of their links is synced.")
    else:
        st.caption("Pick a customer to see everything that happened to their bank links.")
    st.stop()

st.page_link(
    "app_pages/links.py",
    label=f"Links of {plain(customer)}",
    icon="🔗",
    query_params={"customer": customer},
)


def _repair_section() -> None:
    """This customer's links that need something, each with why and how to repair it."""
    to_act_on = analytics.customer_links_to_act_on(customer, limit=MAX_REPAIR_PANELS + 1)
    # A link relinked from here turns healthy and leaves the list; its panel stays until the
    # outcome has been seen.
    remembered_key = f"customer.repairs.{customer}"
    remembered: list[str] = state.get(remembered_key, [])
    repaired_here = [
        link_id
        for link_id in remembered
        if link_id not in to_act_on and relink_started_here(link_id)
    ]
    state[remembered_key] = list(dict.fromkeys([*repaired_here, *to_act_on]))
    shown = [*repaired_here, *to_act_on[:MAX_REPAIR_PANELS]]
    if not shown:
        st.success("All of this customer's links are working.", icon="✅")
        return
    # A link repaired here keeps its panel (with the outcome) but not under "Needs action".
    if repaired_here:
        st.subheader("Repaired just now", divider="green")
        for link_id in repaired_here:
            detail = queries.get_link(link_id)
            if detail is not None:
                render_repair_panel(detail, actor)
    if not to_act_on:
        st.success("All of this customer's links are working.", icon="✅")
        return
    st.subheader("Needs action", divider="red")
    for link_id in to_act_on[:MAX_REPAIR_PANELS]:
        detail = queries.get_link(link_id)
        if detail is not None:
            render_repair_panel(detail, actor)
    if len(to_act_on) > MAX_REPAIR_PANELS:
        st.page_link(
            "app_pages/links.py",
            label="More links of this customer need action: see them all on Links",
            icon="🔗",
            query_params={"customer": customer},
        )


_repair_section()
render_customer_outreach(customer)
st.subheader("Timeline", divider="gray")
kinds = st.pills(
    "Show",
    list(TIMELINE_KINDS),
    selection_mode="multi",
    default=list(TIMELINE_KINDS),
    format_func=_kind_label,
    key="customer.kinds",
    on_change=_reset_paging,
)

cursors: list[str | None] = state["customer.cursors"]
with st.spinner("Reading the customer's history…"):
    page = analytics.customer_timeline(customer, kinds=kinds, limit=PAGE_SIZE, after=cursors[-1])
if not page.entries:
    st.info(
        "Nothing recorded for this customer with these filters."
        if len(cursors) == 1
        else "No older entries."
    )
else:
    st.dataframe(
        [
            {
                "When": entry.at,
                "Kind": _kind_label(entry.kind),
                "Bank": entry.institution_name or "—",
                "Link": entry.link_id or "—",
                "What happened": entry.what,
                "Who": entry.who,
            }
            for entry in page.entries
        ],
        key="customer.timeline",
        hide_index=True,
        width="stretch",
        column_config={"When": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")},
    )
    first = (len(cursors) - 1) * PAGE_SIZE
    st.caption(f"Entries {first + 1}–{first + len(page.entries)}, newest first (UTC).")

pager = st.columns([1, 1, 6])
if pager[0].button("← Newest", disabled=len(cursors) == 1, key="customer.first"):
    _reset_paging()
    st.rerun()
if pager[1].button("Older →", disabled=page.next_cursor is None, key="customer.next"):
    cursors.append(page.next_cursor)
    st.rerun()
