"""The Connect component's Python wrapper inside a real script run (AppTest).

The browser half does not run under AppTest, so the component's state is injected
through ``st.session_state[key]``, the same way page tests feed it Connect results.
"""

from __future__ import annotations

from typing import Any

from streamlit.testing.v1 import AppTest

SESSION = "cs_apptest"
AT = "2025-03-04T05:06:07.890Z"


def _script() -> None:
    import streamlit as st

    from components.moneykit_connect import moneykit_connect

    try:
        log = moneykit_connect(
            mode=st.session_state.get("mode", "link"),
            session_id=st.session_state.get("session_id", "cs_apptest"),
            connect_host=st.session_state.get("host", "http://localhost:8611"),
            key="connect",
            link_session_token="lst_apptest",
        )
    except ValueError as error:
        st.session_state["error"] = str(error)
    else:
        st.session_state["log"] = log


def _app(**state: Any) -> AppTest:
    app = AppTest.from_function(_script)
    for name, value in state.items():
        app.session_state[name] = value
    return app


def _event(seq: int, session_id: str = SESSION) -> dict[str, Any]:
    return {"session_id": session_id, "seq": seq, "type": "event", "at": AT, "data": {"n": seq}}


def test_without_browser_state_the_log_is_empty() -> None:
    app = _app()
    app.run()
    assert not app.exception
    assert app.session_state["log"] == []


def test_the_log_in_component_state_is_returned_sanitised() -> None:
    success = {
        "session_id": SESSION,
        "seq": 3,
        "type": "success",
        "at": AT,
        "data": {"exchangeable_token": "ext_1", "institution": {"id": "b"}, "link_id": "l1"},
    }
    app = _app(connect={"log": [_event(1), {"seq": "two"}, success, _event(4, "cs_old")]})
    app.run()
    assert not app.exception
    # Typed entries of the core's parser, round-tripping to the component's JSON shape.
    assert [(e.seq, e.type) for e in app.session_state["log"]] == [(1, "event"), (3, "success")]
    assert app.session_state["log"][1].to_dict() == success
    # A rerun reads the same state again: the log is cumulative, not a one-off trigger.
    app.run()
    assert len(app.session_state["log"]) == 2


def test_a_bad_connect_host_fails_in_python_before_reaching_the_browser() -> None:
    app = _app(host="http://localhost:8611/")
    app.run()
    assert "not a bare origin" in app.session_state["error"]
    assert not app.get("bidi_component")
