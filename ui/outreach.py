"""Outreach pieces: the plan's tables on the Outreach page; a customer's relink emails on the
customer timeline, and the outreach funnel on the Connect funnel page."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

import streamlit as st

from linkdesk.read.outreach import OutreachGroup
from linkdesk.services.outreach_tracking import Tracking
from ui.wiring import get_services

STAGE_LABELS = {
    "sent": "📧 Sent",
    "opened": "👀 Opened the repair page",
    "finished": "✅ Finished",
    "expired": "⌛ Link expired",
    "not sent": "✖️ Not sent",
}


def stage_label(stage: str) -> str:
    return STAGE_LABELS.get(stage, f"⚠️ {stage.capitalize()}")


def dashboard_origin() -> str:
    """The dashboard's address as this browser reached it (for links customers open)."""
    url = urlsplit(st.context.url or "")
    return f"{url.scheme}://{url.netloc}" if url.scheme and url.netloc else ""


def tracking_rows(rows: list[Tracking]) -> list[dict[str, object]]:
    return [
        {
            "Emailed": row.sent_at or row.created_at,
            "Bank": row.institution_name or "—",
            "Link": row.link_id,
            "To": row.email or "—",
            "Where it stands": stage_label(row.stage),
            "Opened": row.opened_at,
            "Finished": row.finished_at,
            "Link valid until": row.expires_at,
            "Note": row.detail or "",
        }
        for row in rows
    ]


def render_customer_outreach(customer_id: str) -> None:
    """The customer's relink emails: sent → opened the repair page → finished (or expired)."""
    rows = get_services().outreach.customer_tracking(customer_id)
    if not rows:
        return
    st.subheader("Relink emails", divider="blue")
    when = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")
    st.dataframe(
        tracking_rows(rows),
        key="customer.outreach",
        hide_index=True,
        width="stretch",
        column_config={
            "Emailed": when,
            "Opened": when,
            "Finished": when,
            "Link valid until": when,
        },
    )


def render_outreach_funnel(since: datetime, until: datetime, institution_id: str | None) -> None:
    """Relink emails of the period: emailed → opened → finished, and what did not go out."""
    funnel = get_services().outreach.funnel(since, until, institution_id)
    st.subheader("Customer outreach", divider="gray")
    if funnel.emailed + funnel.failed + funnel.not_emailed == 0:
        st.caption("No relink emails in this period.")
        return
    cols = st.columns(6)
    cols[0].metric("Emailed", funnel.emailed)
    share = (lambda part: f"{part / funnel.emailed:.0%} of emailed") if funnel.emailed else None
    cols[1].metric(
        "Opened the repair page", funnel.opened, help=share(funnel.opened) if share else None
    )
    cols[2].metric(
        "Finished the relink", funnel.finished, help=share(funnel.finished) if share else None
    )
    cols[3].metric("Link expired unused", funnel.expired)
    cols[4].metric("Delivery failed", funnel.failed)
    cols[5].metric(
        "Not emailed",
        funnel.not_emailed,
        help="No address, a live relink link already, or the campaign was stopped",
    )


def plan_table(groups: list[OutreachGroup], key: str) -> None:
    """The links of an outreach plan's groups, as many as the plan lists, and how many more."""
    rows = [row for group in groups for row in group.shown]
    listed = [
        {
            "Customer": row.customer_id or "—",
            "Bank": row.institution_name,
            "Link": row.link_id,
            "Address": row.email or "—",
            "Why not emailed": row.reason or "",
        }
        for row in rows
    ]
    st.dataframe(listed, key=key, hide_index=True, width="stretch")
    total = sum(group.count for group in groups)
    if len(rows) < total:
        st.caption(f"The first {len(rows):,} of {total:,} (by link id) are listed.")
