"""Staff sessions (admin): who is signed in on which browser, and ending a session."""

from __future__ import annotations

import streamlit as st

from linkdesk.auth import Permission
from ui.auth import STAFF_SESSION_KEY, require_actor
from ui.wiring import get_services

actor = require_actor()
if not actor.can(Permission.SETTINGS):
    st.error("Only admins can open the staff sessions page.")
    st.stop()
staff = get_services().staff

st.title("Staff sessions")
st.caption(
    "Every browser signed in with a local account. Ending a session signs that browser out on "
    "its next click, in every tab."
)
sessions = staff.live_sessions(actor)
if not sessions:
    st.info("Nobody is signed in with a local account right now.")
own = st.session_state.get(STAFF_SESSION_KEY)
for row in sessions:
    with st.container(border=True, key=f"staff-session-{row.id}"):
        left, right = st.columns([4, 1])
        mine = " (this browser)" if row.id == own else ""
        left.text(f"{row.name} · {row.role}{mine}")
        left.caption(
            f"Signed in {row.created_at:%Y-%m-%d %H:%M} UTC from {row.client or 'unknown'}; "
            f"ends {row.expires_at:%Y-%m-%d %H:%M} UTC"
        )
        if right.button("End session", key=f"revoke.{row.id}"):
            staff.revoke(actor, row.id, reason="ended on the staff sessions page")
            st.rerun()
