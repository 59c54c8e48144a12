""" "Sync now" on the Links page: asks with the number of links first, and says what it did."""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from linkdesk.auth import Actor, Permission
from linkdesk.bootstrap import Services
from linkdesk.read.links import LinkFilters
from linkdesk.services.errors import ServiceError
from ui.render import plain

RESULT_KEY = "links.sync_now.result"


@st.dialog("Sync every link now?")
def _confirm(services: Services, actor: Actor, count: int) -> None:
    st.write(
        f"This queues **{count:,}** links for the sync worker, ahead of its routine work. "
        "Links already queued keep their place; a second request adds nothing."
    )
    confirm, cancel = st.columns(2)
    if confirm.button("Queue them", type="primary", width="stretch", key="sync-now.confirm"):
        try:
            touched = services.worker.trigger_sync(actor, reason="Sync now on the Links page")
        except ServiceError as refused:
            st.session_state[RESULT_KEY] = ("warning", str(refused))
        else:
            st.session_state[RESULT_KEY] = (
                "toast",
                f"{touched} links queued for the sync worker; watch the lag below."
                if touched
                else "Every link was already queued; nothing was added.",
            )
        st.rerun()
    if cancel.button("Cancel", width="stretch", key="sync-now.cancel"):
        st.rerun()


def sync_now_button(services: Services, actor: Actor, where: DeltaGenerator) -> None:
    """The button (for those allowed to queue syncs), its confirmation, and the last result."""
    if actor.can(Permission.SYNC_TRIGGER) and where.button(
        "Sync now", icon="🔄", width="stretch", help="Queue every link for the sync worker"
    ):
        _confirm(services, actor, services.links.count_links(LinkFilters(include_deleted=False)))
    result = st.session_state.pop(RESULT_KEY, None)
    if result is None:
        return
    kind, text = result
    if kind == "warning":
        st.warning(plain(text))
    else:
        st.toast(text)
