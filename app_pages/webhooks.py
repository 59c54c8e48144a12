"""Webhooks (admin): every delivery with its verdict, the verified payloads, and re-apply."""

from __future__ import annotations

import streamlit as st

from linkdesk.auth import Permission
from linkdesk.services.errors import ServiceError
from ui.auth import require_actor
from ui.render import plain
from ui.wiring import get_services

PAGE_SIZE = 50

services = get_services()
actor = require_actor()
if not actor.can(Permission.SYNC_TRIGGER):
    # The menu hides this page from other roles; this guards a page opened some other way.
    st.error("Only admins can open the webhooks page.")
    st.stop()
deliveries = services.deliveries
state = st.session_state


def _reset_paging() -> None:
    state["webhooks.before"] = [None]


st.title("Webhooks")
counts = deliveries.counts_by_verdict()
# Refused requests are counted by reason; only the newest are kept as rows.
refused = services.webhooks.refusal_counts()
rejected = max(sum(refused.values()), counts.get("rejected", 0))
cols = st.columns(4)
cols[0].metric("Deliveries", counts.get("accepted", 0) + counts.get("duplicate", 0) + rejected)
cols[1].metric("Accepted", counts.get("accepted", 0))
cols[2].metric("Duplicates", counts.get("duplicate", 0))
cols[3].metric("Rejected", rejected, help="Every refusal is counted; the newest are listed below.")
if refused:
    st.caption("Refused by reason: " + ", ".join(f"`{k}` {v:,}" for k, v in refused.items()))
if not counts:
    st.info(
        "No webhook delivery yet. MoneyKit sends them to the URL set in `LINKDESK_WEBHOOK_URL` "
        "(served at `/webhooks/moneykit`); every attempt is recorded here with its verdict."
    )
    st.stop()

state.setdefault("webhooks.before", [None])
filters = st.columns([1, 1, 1.4])
verdict = filters[0].selectbox(
    "Verdict",
    [None, "accepted", "duplicate", "rejected"],
    format_func=lambda v: "All" if v is None else v,
    key="webhooks.verdict",
    on_change=_reset_paging,
)
reason = filters[1].selectbox(
    "Reason",
    [None, *deliveries.reasons()],
    format_func=lambda v: "All" if v is None else v,
    key="webhooks.reason",
    on_change=_reset_paging,
)
link_id = filters[2].text_input("Link id", key="webhooks.link", on_change=_reset_paging)

pages: list[int | None] = state["webhooks.before"]
rows = deliveries.recent(
    PAGE_SIZE + 1,
    before_id=pages[-1],
    verdict=verdict,
    reason=reason,
    link_id=link_id.strip() or None,
)
has_more = len(rows) > PAGE_SIZE
rows = rows[:PAGE_SIZE]
selection = st.dataframe(
    [
        {
            "Id": row.id,
            "Received": row.received_at,
            "Verdict": row.verdict,
            "Reason": row.reason or "",
            "Event": row.event or "",
            "Link": row.link_id or "",
            "Attempt": row.attempt,
            "Event time": row.event_timestamp,
        }
        for row in rows
    ],
    key="webhooks.table",
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    column_config={"Received": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")},
)
if not rows:
    st.caption("No delivery matches these filters.")
pager = st.columns([1, 1, 6])
if pager[0].button("← Newest", disabled=len(pages) == 1, key="webhooks.first"):
    _reset_paging()
    st.rerun()
if pager[1].button("Older →", disabled=not has_more, key="webhooks.next"):
    pages.append(rows[-1].id)
    st.rerun()

chosen = selection.selection.rows if selection else []
if chosen and chosen[0] < len(rows):
    # In the URL, so a delivery can be shared with another admin.
    st.query_params["delivery"] = str(rows[chosen[0]].id)
selected = st.query_params.get("delivery") or ""
detail = deliveries.get(int(selected)) if selected.isdigit() and len(selected) < 12 else None
if detail is None:
    st.caption("Select a delivery to see its payload and re-apply it.")
    st.stop()

st.subheader(f"Delivery {detail.id}", divider="gray")
st.caption(
    plain(
        f"{detail.verdict} · {detail.reason or '—'} · event {detail.event or '—'} · "
        f"link {detail.link_id or '—'} · attempt {detail.attempt or '—'}"
    )
)
if detail.payload is None:
    st.info("No payload is kept for this delivery: only verified (accepted) bodies are stored.")
    st.stop()
st.json(detail.payload, expanded=True)
with st.form(f"webhooks.reapply.{detail.id}"):
    why = st.text_input("Reason (kept in the audit log)", key=f"webhooks.reason.{detail.id}")
    if st.form_submit_button("Re-apply this delivery", type="primary"):
        try:
            result = services.webhook_apply.reapply(detail.id, actor, reason=why.strip() or None)
        except ServiceError as refused:
            st.warning(plain(refused))
        else:
            st.success(plain(f"Re-applied ({result.status}): {result.detail}"))
