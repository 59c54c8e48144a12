"""The dashboard's one wiring point: every page gets its services from here.

`build_services()` reads the settings from the environment and builds the store, the MoneyKit
client and the services once per process; `st.cache_resource` shares them across sessions. Tests
configure the same function through environment variables (DATABASE_URL, MONEYKIT_BASE_URL...)
instead of reaching into the pages.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.bootstrap import Services, build_services


@st.cache_resource(show_spinner="Opening the Linkdesk store…")
def get_services() -> Services:
    return build_services()


def theme_is_dark() -> bool:
    # st.context.theme.type is None before the browser has reported its theme (and in AppTest).
    return st.context.theme.type == "dark"
