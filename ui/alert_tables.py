"""The Alerts page's tables: alerts to pick from, and notifications that keep failing."""

from __future__ import annotations

import streamlit as st

from linkdesk.alerts.service import AlertRow, NotificationRow

TIME = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")


def alert_table(rows: list[AlertRow], key: str) -> int | None:
    """Alerts as a table (text only: titles carry bank names from outside); the chosen id."""
    if not rows:
        st.caption("None.")
        return None
    picked = st.dataframe(
        [
            {
                "Id": a.id,
                "Alert": a.title,
                "Rule": a.rule_id,
                "Started": a.started_at,
                "Resolved": a.resolved_at,
                "Acknowledged by": a.acknowledged_by or "",
                "Silenced until": a.silenced_until,
            }
            for a in rows
        ],
        key=key,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="single-row",
        column_config={"Started": TIME, "Resolved": TIME, "Silenced until": TIME},
    )
    chosen = picked.selection.rows if picked else []
    return int(rows[chosen[0]].id) if chosen and chosen[0] < len(rows) else None


def deliveries_table(failing: list[NotificationRow]) -> None:
    st.caption("Notifications still being retried (with backoff) or given up after 8 attempts.")
    st.dataframe(
        [
            {
                "Alert": n.alert_id,
                "Channel": n.channel,
                "Message": n.kind,
                "Status": n.status,
                "Attempts": n.attempts,
                "Next try": n.next_attempt_at if n.status == "pending" else None,
                "Last error": n.last_error or "",
            }
            for n in failing
        ],
        hide_index=True,
        width="stretch",
        column_config={"Next try": TIME},
    )
