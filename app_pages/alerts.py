"""Alerts: what is firing, acknowledged or resolved, who did what, deliveries that keep failing,
and the rules (admins edit them). Each alert opens the Links view behind it."""

from __future__ import annotations

import streamlit as st

from linkdesk.auth import Permission
from linkdesk.errors import ServiceError
from ui.alert_rules import render_rules
from ui.alert_tables import TIME, alert_table, deliveries_table
from ui.auth import require_actor
from ui.wiring import get_services

services = get_services()
actor = require_actor()
alerts = services.alerts

st.title("Alerts")
firing = alerts.alerts(status="firing")
open_now = [a for a in firing if a.acknowledged_at is None]
acknowledged = [a for a in firing if a.acknowledged_at is not None]
resolved = alerts.alerts(status="resolved", limit=50)
failing = alerts.notifications()


@st.fragment(run_every=10)
def live_counts() -> None:
    """Counts that refresh on their own, so an alert shows up here (e.g. during a demo
    scenario) without anyone touching the page; the tables below follow on the next action."""
    now_firing = alerts.alerts(status="firing")
    cols = st.columns(4)
    cols[0].metric("Firing", sum(1 for a in now_firing if a.acknowledged_at is None))
    cols[1].metric("Acknowledged", sum(1 for a in now_firing if a.acknowledged_at is not None))
    cols[2].metric("Resolved (last 50)", len(alerts.alerts(status="resolved", limit=50)))
    cols[3].metric("Deliveries retrying or failed", len(alerts.notifications()))


live_counts()
if not firing and not resolved:
    st.info(
        "No alert has fired yet. The workers check the rules below on their own interval "
        "(`LINKDESK_ALERTS_EVALUATE_SECONDS`) and notify the channels set up in the settings."
    )


tabs = st.tabs(["Firing", "Acknowledged", "Resolved", "History", "Deliveries", "Rules"])
for tab, rows, key in (
    (tabs[0], open_now, "alerts.firing"),
    (tabs[1], acknowledged, "alerts.acknowledged"),
    (tabs[2], resolved, "alerts.resolved"),
):
    with tab:
        chosen = alert_table(rows, key)
        if chosen is not None:
            st.query_params["alert"] = str(chosen)  # shareable, like the links in messages
with tabs[3]:
    st.dataframe(
        [
            {"At": h.at, "Alert": h.alert_id, "Who": h.actor, "What": h.action, "Detail": h.detail}
            for h in alerts.history(limit=200)
        ],
        hide_index=True,
        width="stretch",
        column_config={"At": TIME},
    )
with tabs[4]:
    deliveries_table(failing)
with tabs[5]:
    render_rules(services, actor)

selected = st.query_params.get("alert") or ""
alert = alerts.get_alert(int(selected)) if selected.isdigit() and len(selected) < 12 else None
if alert is None:
    st.caption("Select an alert to see what is behind it, acknowledge it or silence it.")
    st.stop()

st.subheader(f"Alert {alert.id} · {alert.status}", divider="gray")
st.text(alert.title)
st.page_link(
    "app_pages/links.py",
    label="Open the links behind it",
    icon="🔗",
    query_params=alert.links_query,
)
if alert.silenced_until is not None:
    st.caption(f"Silenced until {alert.silenced_until:%Y-%m-%d %H:%M} UTC")
    st.text(f"Reason: {alert.silence_reason or ''}")
if alert.status == "firing" and actor.can(Permission.ALERT_RESPOND):
    act = st.columns(2)
    if alert.acknowledged_at is None and act[0].button("Acknowledge", type="primary"):
        try:
            alerts.acknowledge(actor, alert.id)
        except (ValueError, ServiceError) as refused:
            st.warning(str(refused))
        else:
            st.rerun()
    with act[1].form(f"alerts.silence.{alert.id}"):
        minutes = st.number_input("Silence for (minutes)", 1, 43200, 60)
        reason = st.text_input("Why (required)")
        if st.form_submit_button("Silence"):
            try:
                until = alerts.silence(actor, alert.id, minutes=int(minutes), reason=reason)
            except (ValueError, ServiceError) as refused:
                st.warning(str(refused))
            else:
                st.success(f"Silenced until {until:%Y-%m-%d %H:%M} UTC.")
st.dataframe(
    [
        {"At": h.at, "Who": h.actor, "What": h.action, "Detail": h.detail}
        for h in alerts.history(alert_id=alert.id)
    ],
    hide_index=True,
    width="stretch",
    column_config={"At": TIME},
)
