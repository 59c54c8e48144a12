"""OAuth return: where a bank sends the person back; Connect resumes with `continue`.

In the usual case the bank page was a popup opened by Connect: `continue()` hands the result to
the Connect window that opened it, and this tab has nothing else to do. Without an opener (a
full-page redirect) Connect finishes here, for the signed-in person's newest open session.

MoneyKit appends its own query parameters to our redirect URI. `st.context.url` drops the query
string, so the full URL is rebuilt from `st.query_params` before it is handed to Connect.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

import streamlit as st

from components.moneykit_connect import moneykit_connect
from linkdesk.moneykit.errors import MoneyKitError
from ui.auth import current_actor
from ui.connect_flow import show_outcome
from ui.errors import report
from ui.wiring import get_services, theme_is_dark

services = get_services()
st.title("Finishing the bank connection")

actor = current_actor()
session = services.sessions.latest_pending_session(actor=actor) if actor else None
# Without a known session the id only names this tab's launcher; the popup branch needs no more.
session_id = (
    session.session_id
    if session
    else st.session_state.setdefault("oauth_return.session_id", f"return-{uuid.uuid4().hex}")
)
params = [(name, value) for name in st.query_params for value in st.query_params.get_all(name)]
redirect_url = services.settings.redirect_uri + ("?" + urlencode(params) if params else "")
log = moneykit_connect(
    mode="continue",
    session_id=session_id,
    connect_host=services.settings.moneykit_connect_host,
    redirect_url=redirect_url,
    color_scheme="dark" if theme_is_dark() else "light",
    key=f"moneykit-continue-{session_id}",
)
if session is None or actor is None:
    st.info("If the bank opened in a new window, Connect continues in the original tab.")
elif log:
    try:
        outcome = services.sessions.apply_log(session.session_id, log, actor=actor)
    except MoneyKitError as error:
        report(error, where="oauth_return.apply", key="oauth-return")
    else:
        show_outcome(outcome)
