"""Connect: link a new bank for a customer through MoneyKit Connect."""

from __future__ import annotations

import streamlit as st

from linkdesk.moneykit.errors import MoneyKitError
from linkdesk.services import InvalidCustomerId
from ui import connect_flow
from ui.auth import require_actor
from ui.errors import report
from ui.render import plain
from ui.wiring import get_services

SLOT = "new-link"
NEW_CUSTOMER = "➕ New customer…"

services = get_services()

st.title("Connect a bank")
st.caption(
    "Opens MoneyKit Connect for a customer. When the customer finishes, Linkdesk exchanges the "
    "token once, stores the link with its institution and accounts, and it appears on Links."
)

# The customer fields stay on screen while Connect is open (disabled), so Streamlit keeps
# their values and the agent can try again for the same customer without retyping.
busy = connect_flow.is_open(SLOT)
customers = [row.customer_id for row in services.links.list_customers(limit=200)]
choice = st.selectbox(
    "Customer", [NEW_CUSTOMER, *customers], key="connect.customer_choice", disabled=busy
)
customer_id = (
    st.text_input(
        "New customer id",
        key="connect.new_customer",
        placeholder="e.g. cust_1234 (4 to 150 characters)",
        disabled=busy,
    ).strip()
    if choice == NEW_CUSTOMER
    else choice
)
if st.button("Open MoneyKit Connect", type="primary", disabled=busy or not customer_id):
    try:
        started = services.sessions.start_link(
            customer_external_id=customer_id, actor=require_actor()
        )
    except InvalidCustomerId as error:
        st.error(plain(error))
    except MoneyKitError as error:
        report(error, where="connect.start", key="connect-start")
    else:
        connect_flow.begin(SLOT, started)
        st.rerun()

outcome = connect_flow.render(SLOT)
if outcome is not None and outcome.outcome == "success" and outcome.link_id:
    st.page_link(
        "app_pages/links.py",
        label="Open the new link on the Links page",
        icon="🔗",
        query_params={"link": outcome.link_id},
    )
