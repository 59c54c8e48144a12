"""The customer timeline's parts: the links that need action (with their repair), and the list
of what happened, each kind with its label."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from linkdesk.auth import Actor
from linkdesk.bootstrap import Services
from linkdesk.read.timeline import TimelineEntry
from ui.link_detail import relink_started_here, render_repair_panel

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


def kind_label(kind: str) -> str:
    return f"{KIND_ICONS.get(kind, '')} {KIND_LABELS.get(kind, kind)}".strip()


def _panels(services: Services, link_ids: Sequence[str], actor: Actor) -> None:
    for link_id in link_ids:
        detail = services.link_detail.get_link(link_id)
        if detail is not None:
            render_repair_panel(detail, actor)


def render_repairs(services: Services, customer: str, actor: Actor) -> None:
    """This customer's links that need something, each with why and how to repair it."""
    to_act_on = services.timeline.customer_links_to_act_on(customer, limit=MAX_REPAIR_PANELS + 1)
    # A link relinked from here turns healthy and leaves the list; its panel stays until the
    # outcome has been seen.
    state = st.session_state
    remembered_key = f"customer.repairs.{customer}"
    remembered: list[str] = state.get(remembered_key, [])
    repaired_here = [
        link_id
        for link_id in remembered
        if link_id not in to_act_on and relink_started_here(link_id)
    ]
    state[remembered_key] = list(dict.fromkeys([*repaired_here, *to_act_on]))
    # A link repaired here keeps its panel (with the outcome) but not under "Needs action".
    if repaired_here:
        st.subheader("Repaired just now", divider="green")
        _panels(services, repaired_here, actor)
    if not to_act_on:
        st.success("All of this customer's links are working.", icon="✅")
        return
    st.subheader("Needs action", divider="red")
    _panels(services, to_act_on[:MAX_REPAIR_PANELS], actor)
    if len(to_act_on) > MAX_REPAIR_PANELS:
        st.page_link(
            "app_pages/links.py",
            label="More links of this customer need action: see them all on Links",
            icon="🔗",
            query_params={"customer": customer},
        )


def render_entries(entries: Sequence[TimelineEntry]) -> None:
    """One page of the timeline as a table, newest first."""
    st.dataframe(
        [
            {
                "When": entry.at,
                "Kind": kind_label(entry.kind),
                "Bank": entry.institution_name or "—",
                "Link": entry.link_id or "—",
                "What happened": entry.what,
                "Who": entry.who,
            }
            for entry in entries
        ],
        key="customer.timeline",
        hide_index=True,
        width="stretch",
        column_config={"When": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")},
    )
