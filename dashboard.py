"""Linkdesk's entrypoint: the sign-in gate and the pages each role may open, nothing else.

A page that is not passed to `st.navigation` cannot be reached, not even by URL, so the page list
is built from the signed-in person's role. The services check the role again before they act.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.auth import Permission
from ui.auth import current_actor, sign_in_page, sign_out_page

STAFF_PAGE_PATHS = ("connect", "activity")

# Reached by customers and banks, never through the menu.
customer_repair = st.Page(
    "app_pages/customer_relink.py",
    title="Repair your bank connection",
    url_path="repair",
    visibility="hidden",
)
oauth_return = st.Page(
    "app_pages/oauth_return.py", title="OAuth return", url_path="oauth_return", visibility="hidden"
)

actor = current_actor()
if actor is None:
    navigation = st.navigation(
        [
            st.Page(sign_in_page, title="Sign in", icon="🔐", default=True),
            # A shared link to a staff page asks for sign-in first, then opens that page.
            *(
                st.Page(sign_in_page, title="Sign in", icon="🔐", url_path=path)
                for path in STAFF_PAGE_PATHS
            ),
            customer_repair,
            oauth_return,
        ],
        position="hidden",
    )
else:
    work = [st.Page("app_pages/links.py", title="Links", icon="🔗", default=True)]
    if actor.can(Permission.START_LINK):
        work.append(
            st.Page("app_pages/connect.py", title="Connect a bank", icon="➕", url_path="connect")
        )
    work.append(st.Page("app_pages/activity.py", title="Activity", icon="🧾", url_path="activity"))
    account = [st.Page(sign_out_page, title="Sign out", icon="🚪", url_path="sign_out")]
    navigation = st.navigation(
        {
            "Links": work,
            f"{actor.name} · {actor.role.value}": account,
            "": [customer_repair, oauth_return],
        }
    )
st.set_page_config(page_title="Linkdesk", page_icon="🔗", layout="wide")
navigation.run()
