"""Customer timeline: everything that happened to one customer's bank links, newest first.

Support opens it from a ticket (`?customer=<id>`) and sees Connect sessions and their screens,
exchanges and relinks, state changes, webhooks, sync results and staff actions in one list.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.read.timeline import TIMELINE_KINDS
from ui.auth import require_actor
from ui.customer_timeline import kind_label, render_entries, render_repairs
from ui.outreach import render_customer_outreach
from ui.render import plain
from ui.wiring import get_services

PAGE_SIZE = 50

services = get_services()
queries = services.links
actor = require_actor()
state = st.session_state


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


render_repairs(services, customer, actor)
render_customer_outreach(customer)
st.subheader("Timeline", divider="gray")
kinds = st.pills(
    "Show",
    list(TIMELINE_KINDS),
    selection_mode="multi",
    default=list(TIMELINE_KINDS),
    format_func=kind_label,
    key="customer.kinds",
    on_change=_reset_paging,
)

cursors: list[str | None] = state["customer.cursors"]
with st.spinner("Reading the customer's history…"):
    page = services.timeline.customer_timeline(
        customer, kinds=kinds, limit=PAGE_SIZE, after=cursors[-1]
    )
if not page.entries:
    st.info(
        "Nothing recorded for this customer with these filters."
        if len(cursors) == 1
        else "No older entries."
    )
else:
    render_entries(page.entries)
    first = (len(cursors) - 1) * PAGE_SIZE
    st.caption(f"Entries {first + 1}–{first + len(page.entries)}, newest first (UTC).")

pager = st.columns([1, 1, 6])
if pager[0].button("← Newest", disabled=len(cursors) == 1, key="customer.first"):
    _reset_paging()
    st.rerun()
if pager[1].button("Older →", disabled=page.next_cursor is None, key="customer.next"):
    cursors.append(page.next_cursor)
    st.rerun()
