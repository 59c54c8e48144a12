"""Activity: recent Connect sessions and the audit log of staff actions."""

from __future__ import annotations

import streamlit as st

from ui.wiring import get_services

services = get_services()

st.title("Activity")
sessions_tab, audit_tab = st.tabs(["Connect sessions", "Audit log"])

with sessions_tab:
    sessions = services.links.recent_sessions(100)
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

with audit_tab:
    entries = services.audit.entries(200)
    if entries:
        st.dataframe(
            [
                {
                    "When": entry.at,
                    "Who": entry.actor,
                    "Action": entry.action,
                    "Link": entry.link_id or "—",
                    "Customer": entry.customer_id or "—",
                    "Outcome": entry.outcome,
                    "Detail": entry.detail or "",
                }
                for entry in entries
            ],
            hide_index=True,
            width="stretch",
        )
    else:
        st.info("No staff action recorded yet.")
