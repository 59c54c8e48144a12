"""Linkdesk's entrypoint: page configuration and navigation, nothing else."""

from __future__ import annotations

import streamlit as st

pages = {
    "Links": [
        st.Page("app_pages/links.py", title="Links", icon="🔗", default=True),
        st.Page("app_pages/connect.py", title="Connect a bank", icon="➕", url_path="connect"),
        st.Page("app_pages/activity.py", title="Activity", icon="🧾", url_path="activity"),
    ],
}
# The bank sends the customer back here after OAuth; it is not a page staff navigate to.
oauth_return = st.Page(
    "app_pages/oauth_return.py", title="OAuth return", url_path="oauth_return", visibility="hidden"
)
navigation = st.navigation({**pages, "": [oauth_return]})
st.set_page_config(page_title="Linkdesk", page_icon="🔗", layout="wide")
navigation.run()
