"""The customer-facing relink page: one link, opened from a signed, single-use URL.

It shows nothing of Linkdesk and no data beyond the customer's own bank name. The token is used
up only when the customer presses the button, so a mail scanner that opens the URL first does
not burn it.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.moneykit.errors import MoneyKitError
from linkdesk.services.errors import ServiceError
from ui.connect_flow import mount_connect, show_outcome
from ui.wiring import get_services, theme_is_dark

STARTED_KEY = "customer_relink.started"
OUTCOME_KEY = "customer_relink.outcome"

services = get_services()
token = st.query_params.get("token", "")

st.title("Repair your bank connection")
if not token:
    st.error("This page needs the link your support contact sent you.")
    st.stop()

outcome = st.session_state.get(OUTCOME_KEY)
started = st.session_state.get(STARTED_KEY)
if outcome is None and started is None:
    st.write(
        "Your bank asked you to sign in again. Press the button, then sign in to your bank in "
        "the window that opens. We never see your bank password."
    )
    if st.button("Reconnect my bank", type="primary"):
        try:
            st.session_state[STARTED_KEY] = services.customer_links.redeem_begin(token)
        except ServiceError as error:
            st.error(str(error))
        except MoneyKitError:
            st.error("We could not reach the bank connection service. Please try again later.")
        else:
            st.rerun()
elif started is not None:
    log = mount_connect(started, color_scheme="dark" if theme_is_dark() else "light")
    if log:
        try:
            result = services.customer_links.redeem_finish(token, log)
        except (ServiceError, MoneyKitError):
            st.error("Something went wrong while saving your connection. Please try again later.")
        else:
            if result.outcome != "pending":
                st.session_state[OUTCOME_KEY] = result
                del st.session_state[STARTED_KEY]
                st.rerun()
    st.info("Finish in the bank connection window. This page updates by itself.")

if outcome is not None:
    if outcome.outcome == "success":
        st.success("Your bank is connected again. You can close this page.", icon="✅")
    else:
        show_outcome(outcome)
