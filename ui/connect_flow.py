"""Running one MoneyKit Connect session inside a page.

A page starts a session through the ConnectService and hands it to `begin`; `render` mounts the
Connect component for it on every rerun and applies the component's cumulative event log. The
service applies each entry once (session id + sequence number), so reruns, double clicks and
re-deliveries cannot exchange a token twice or record an event twice. The page only remembers
which session is open and the outcome to show.
"""

from __future__ import annotations

from typing import Any, Literal

import streamlit as st

from components.moneykit_connect import moneykit_connect
from linkdesk.moneykit.errors import MoneyKitError
from linkdesk.services import ApplyOutcome, StartedSession
from ui.auth import require_actor
from ui.errors import report
from ui.render import plain
from ui.wiring import get_services, theme_is_dark


def _active_key(slot: str) -> str:
    return f"connect.{slot}.active"


def _result_key(slot: str) -> str:
    return f"connect.{slot}.result"


def begin(slot: str, started: StartedSession) -> None:
    """Remember `started` as the open Connect session of this slot (one per page area)."""
    st.session_state[_active_key(slot)] = started
    st.session_state.pop(_result_key(slot), None)


def is_open(slot: str) -> bool:
    return _active_key(slot) in st.session_state


def has_result(slot: str) -> bool:
    """Whether the slot's last session finished and its outcome is still to be shown."""
    return _result_key(slot) in st.session_state


def clear(slot: str) -> None:
    st.session_state.pop(_active_key(slot), None)
    st.session_state.pop(_result_key(slot), None)


def mount_connect(
    started: StartedSession, *, color_scheme: Literal["light", "dark"]
) -> list[dict[str, Any]]:
    """Mount Connect for a started session and return its event log so far."""
    return moneykit_connect(
        mode=started.mode,
        session_id=started.session_id,
        connect_host=get_services().settings.moneykit_connect_host,
        link_session_token=started.link_session_token,
        color_scheme=color_scheme,
        key=f"moneykit-connect-{started.session_id}",
    )


def render(slot: str) -> ApplyOutcome | None:
    """Mount Connect for the slot's open session, apply what it reported, show the outcome."""
    services = get_services()
    started: StartedSession | None = st.session_state.get(_active_key(slot))
    if started is not None:
        log = mount_connect(started, color_scheme="dark" if theme_is_dark() else "light")
        outcome: ApplyOutcome | None = None
        if log:
            try:
                outcome = services.sessions.apply_log(
                    started.session_id, log, actor=require_actor()
                )
            except MoneyKitError as error:
                report(error, where="connect.apply", key=f"apply-{slot}")
        if outcome is not None and outcome.outcome != "pending":
            st.session_state[_result_key(slot)] = outcome
            del st.session_state[_active_key(slot)]
            # Redraw the whole page so everything above shows the link's new state.
            st.rerun()
        else:
            verb = "relink" if started.mode == "relink" else "link"
            st.info(
                f"MoneyKit Connect is open to {verb} a bank. Finish or close it in the Connect "
                "window; this page updates by itself."
            )
            if st.button("Abandon this Connect session", key=f"abandon-{started.session_id}"):
                clear(slot)
                st.rerun()

    result: ApplyOutcome | None = st.session_state.get(_result_key(slot))
    if result is not None:
        show_outcome(result)
    return result


def show_outcome(outcome: ApplyOutcome) -> None:
    if outcome.outcome == "success":
        st.success(plain(outcome.message or f"Bank linked (link {outcome.link_id})."), icon="✅")
    elif outcome.outcome == "exit":
        st.warning(plain(outcome.message or "Connect was closed before finishing."), icon="↩️")
    elif outcome.outcome == "failed":
        st.error(plain(outcome.message or "Linking failed."), icon="⚠️")
