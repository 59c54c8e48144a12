"""Activity: the audit log of staff actions, Connect sessions, webhooks and sync attempts."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import streamlit as st

from ui.wiring import get_services

services = get_services()

st.title("Activity")
audit_tab, sessions_tab, webhooks_tab, sync_tab = st.tabs(
    ["Audit log", "Connect sessions", "Webhooks", "Sync attempts"]
)

with audit_tab:
    st.caption("Every staff action, append-only: who, with which role, why, and what came of it.")
    filters = st.columns([1, 1, 1, 1, 1.4])
    who = filters[0].text_input("Who", key="audit.actor", placeholder="staff name")
    action = filters[1].text_input("Action", key="audit.action", placeholder="e.g. connect.")
    link_id = filters[2].text_input("Link id", key="audit.link")
    customer = filters[3].text_input("Customer id", key="audit.customer")
    today = datetime.now(UTC).date()
    period = filters[4].date_input(
        "Between", value=(today - timedelta(days=30), today), key="audit.period"
    )
    since = until = None
    if isinstance(period, tuple) and len(period) == 2:
        since = datetime.combine(period[0], time.min, tzinfo=UTC)
        until = datetime.combine(period[1] + timedelta(days=1), time.min, tzinfo=UTC)
    entries = services.audit.entries(
        500,
        actor=who.strip() or None,
        action=action.strip() or None,
        link_id=link_id.strip() or None,
        customer_id=customer.strip() or None,
        since=since,
        until=until,
    )
    if entries:
        st.dataframe(
            [
                {
                    "When": entry.at,
                    "Who": entry.actor,
                    "Role": entry.role or "",
                    "Action": entry.action,
                    "Link": entry.link_id or "",
                    "Customer": entry.customer_id or "",
                    "Outcome": entry.outcome,
                    "Reason": entry.reason or "",
                    "Detail": entry.detail or "",
                }
                for entry in entries
            ],
            hide_index=True,
            width="stretch",
            column_config={"When": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")},
        )
        st.caption(f"{len(entries)} entries (newest first, at most 500).")
    else:
        st.info("No audit entry matches these filters.")

with sessions_tab:
    sessions = services.activity.recent_sessions(100)
    if sessions:
        st.dataframe(
            [
                {
                    "Started": session.started_at,
                    "Mode": session.mode,
                    "Customer": session.customer_id or "—",
                    "Link": session.link_id or "—",
                    "By": session.started_by,
                    "Outcome": session.outcome,
                    "Exit error": session.exit_error_id or "",
                    "Message": session.exit_message or "",
                    "Request id": session.exit_request_id or "",
                    "Events": session.event_count,
                    "Finished": session.finished_at,
                }
                for session in sessions
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.info("No Connect session yet. Start one on the Connect page.")

with webhooks_tab:
    verdict = st.segmented_control(
        "Verdict", ["accepted", "duplicate", "rejected"], key="webhooks.verdict"
    )
    deliveries = services.deliveries.recent(200, verdict=verdict)
    if deliveries:
        st.dataframe(
            [
                {
                    "Received": delivery.received_at,
                    "Event": delivery.event or "",
                    "Link": delivery.link_id or "",
                    "Verdict": delivery.verdict,
                    "Reason": delivery.reason,
                    "Attempt": delivery.attempt,
                    "Event time": delivery.event_timestamp,
                }
                for delivery in deliveries
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.info("No webhook delivery recorded yet.")

with sync_tab:
    attempts = services.activity.sync_attempts(200)
    if attempts:
        st.dataframe(
            [
                {
                    "When": attempt.at,
                    "Link": attempt.link_id or "(discovery)",
                    "Kind": attempt.kind,
                    "Outcome": attempt.outcome,
                    "Error": attempt.error or "",
                    "ms": attempt.duration_ms,
                    "Worker": attempt.worker,
                }
                for attempt in attempts
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.info("The sync worker has not run yet.")
