"""The customer-facing relink page: one link, opened from a signed, single-use URL.

It shows nothing of Linkdesk and no data beyond the customer's own bank name: no link id, no
staff name. A link that is forged, expired or used is refused as soon as the page opens. The
token is used up only when the customer presses the button, so a mail scanner that opens the
URL first does not burn it. A repair counts as done only once MoneyKit confirms it.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.moneykit.errors import MoneyKitError
from linkdesk.services.customer_links import CustomerOutcome
from linkdesk.services.errors import ServiceError
from ui.connect_flow import mount_connect
from ui.render import plain
from ui.wiring import get_services, theme_is_dark

STARTED_KEY = "customer_relink.started"
OUTCOME_KEY = "customer_relink.outcome"
UNREACHABLE = "We could not reach the bank connection service. Please try again later."

services = get_services()
token = st.query_params.get("token", "")

st.title("Repair your bank connection")
if not token:
    st.error("This page needs the link your support contact sent you.")
    st.stop()

outcome: CustomerOutcome | None = st.session_state.get(OUTCOME_KEY)
started = st.session_state.get(STARTED_KEY)
if outcome is None and started is None:
    try:
        check = services.customer_links.check(token)
    except ServiceError as refused:
        st.error(plain(refused))
        st.stop()
    if check.repair == "not_needed":
        st.success("Your bank connection works; there is nothing to repair.", icon="✅")
        st.stop()
    if check.repair == "in_progress":
        st.info(
            "A repair of this bank connection is already in progress. Please try again later "
            "with the same link.",
            icon="⏳",
        )
        st.stop()
    bank = f" ({plain(check.institution_name)})" if check.institution_name else ""
    st.write(
        f"Your bank{bank} asked you to sign in again. Press the button, then sign in to your "
        "bank in the window that opens. We never see your bank password."
    )
    if st.button("Reconnect my bank", type="primary"):
        try:
            st.session_state[STARTED_KEY] = services.customer_links.redeem_begin(token)
        except ServiceError as error:
            # Customer-safe wording: the service names neither the staff member nor the link.
            st.error(plain(error))
        except MoneyKitError:
            st.error(UNREACHABLE)
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
        st.success(outcome.message, icon="✅")
    elif outcome.outcome in ("unconfirmed", "exit"):
        st.warning(outcome.message, icon="⚠️")
    else:
        st.error(outcome.message, icon="⚠️")
