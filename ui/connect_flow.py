"""Running one MoneyKit Connect session inside a page.

A page starts a session through the ConnectService and hands it to `begin`; `render` mounts the
Connect component for it on every rerun and applies the component's cumulative event log. The
service applies each entry once (session id + sequence number), so reruns, double clicks and
re-deliveries cannot exchange a token twice or record an event twice. The page only remembers
which session is open and the outcome to show.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Literal

import streamlit as st

from components.moneykit_connect import log_in_state, moneykit_connect
from linkdesk.connect_log import LogEntry
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


def _component_key(started: StartedSession) -> str:
    return f"moneykit-connect-{started.session_id}"


def mount_connect(
    started: StartedSession,
    *,
    color_scheme: Literal["light", "dark"],
    on_change: Callable[[], None] | None = None,
) -> list[LogEntry]:
    """Mount Connect for a started session and return its event log so far (typed: parsed once
    at the component's boundary)."""
    return moneykit_connect(
        mode=started.mode,
        session_id=started.session_id,
        connect_host=get_services().settings.moneykit_connect_host,
        link_session_token=started.link_session_token,
        color_scheme=color_scheme,
        key=_component_key(started),
        on_change=on_change,
    )


def _applied_key(slot: str) -> str:
    return f"connect.{slot}.applied"


def _apply(slot: str, started: StartedSession, log: list[LogEntry]) -> ApplyOutcome:
    """Apply the log; once the session has ended, keep its outcome and close the slot."""
    outcome = get_services().sessions.apply_log(started.session_id, log, actor=require_actor())
    # The same log is handed to the page's run after the callback: nothing new to apply then.
    st.session_state[_applied_key(slot)] = (started.session_id, len(log))
    if outcome.outcome != "pending":
        st.session_state[_result_key(slot)] = outcome
        st.session_state.pop(_active_key(slot), None)
    return outcome


def _apply_before_the_run(slot: str, session_id: str) -> None:
    """The component's change callback. It runs before the page's script, so the run that
    follows already reads the link's new state and shows the outcome: one run after Done
    instead of one that applies and a second one that shows."""
    started: StartedSession | None = st.session_state.get(_active_key(slot))
    if started is None or started.session_id != session_id:
        return
    log = log_in_state(_component_key(started), session_id=session_id)
    if not log:
        return
    # On a MoneyKit error the log is applied again while the page draws, where it is shown.
    with suppress(MoneyKitError):
        _apply(slot, started, log)


def render(slot: str) -> ApplyOutcome | None:
    """Mount Connect for the slot's open session, apply what it reported, show the outcome."""
    services = get_services()
    started: StartedSession | None = st.session_state.get(_active_key(slot))
    if started is not None:
        log = mount_connect(
            started,
            color_scheme="dark" if theme_is_dark() else "light",
            on_change=partial(_apply_before_the_run, slot, started.session_id),
        )
        outcome: ApplyOutcome | None = None
        if log and st.session_state.get(_applied_key(slot)) != (started.session_id, len(log)):
            try:
                outcome = _apply(slot, started, log)
            except MoneyKitError as error:
                report(error, where="connect.apply", key=f"apply-{slot}")
        if outcome is not None and outcome.outcome != "pending":
            # Redraw the whole page so everything above shows the link's new state.
            st.rerun()
        else:
            verb = "relink" if started.mode == "relink" else "link"
            st.info(
                f"MoneyKit Connect is open to {verb} a bank. Finish or close it in the Connect "
                "window; this page updates by itself."
            )
            if st.button("Abandon this Connect session", key=f"abandon-{started.session_id}"):
                services.sessions.abandon_session(started.session_id, actor=require_actor())
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
