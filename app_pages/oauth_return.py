"""OAuth return: where a bank sends the customer back; Connect resumes with `continue`.

MoneyKit appends its own query parameters to our redirect URI. `st.context.url` drops the query
string, so the full URL is rebuilt from `st.query_params` before it is handed to Connect.
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from components.moneykit_connect import moneykit_connect
from linkdesk.moneykit.errors import MoneyKitError
from ui.connect_flow import show_outcome
from ui.wiring import current_actor, get_services, theme_is_dark

services = get_services()
st.title("Finishing your bank connection")

session = services.sessions.latest_pending_session(actor=current_actor())
if session is None:
    st.info("There is no Connect session waiting for a bank's answer. You can close this tab.")
    st.stop()

params = [(name, value) for name in st.query_params for value in st.query_params.get_all(name)]
redirect_url = services.settings.redirect_uri + ("?" + urlencode(params) if params else "")
log = moneykit_connect(
    mode="continue",
    session_id=session.session_id,
    connect_host=services.settings.moneykit_connect_host,
    redirect_url=redirect_url,
    color_scheme="dark" if theme_is_dark() else "light",
    key=f"moneykit-continue-{session.session_id}",
)
if log:
    try:
        outcome = services.sessions.apply_log(session.session_id, log, actor=current_actor())
    except MoneyKitError as error:
        st.error(f"MoneyKit could not complete this step: {error.user_message}")
    else:
        show_outcome(outcome)
