"""Linkdesk's entrypoint: the sign-in gate and the pages each role may open, nothing else.

A page that is not passed to `st.navigation` cannot be reached, not even by URL, so the page list
is built from the signed-in person's role. The services check the role again before they act.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.auth import Permission
from ui.auth import current_actor, sign_in_page, sign_out_page

STAFF_PAGE_PATHS = ("overview", "links", "connect", "customer", "funnel", "activity", "webhooks")
# The Overview is the intended landing page. Links stays the default until the Links page tests
# and the end-to-end flows open it by its path instead of relying on the bare URL.
OVERVIEW_IS_DEFAULT = False

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
    operations = [
        st.Page(
            "app_pages/overview.py",
            title="Overview",
            icon="📊",
            url_path="overview",
            default=OVERVIEW_IS_DEFAULT,
        ),
        st.Page("app_pages/funnel.py", title="Connect funnel", icon="🪜", url_path="funnel"),
    ]
    work = [
        st.Page(
            "app_pages/links.py",
            title="Links",
            icon="🔗",
            url_path="links",
            default=not OVERVIEW_IS_DEFAULT,
        ),
        st.Page("app_pages/customer.py", title="Customer timeline", icon="👤", url_path="customer"),
    ]
    if actor.can(Permission.START_LINK):
        work.append(
            st.Page("app_pages/connect.py", title="Connect a bank", icon="➕", url_path="connect")
        )
    work.append(st.Page("app_pages/activity.py", title="Activity", icon="🧾", url_path="activity"))
    if actor.can(Permission.SYNC_TRIGGER):
        operations.append(
            st.Page("app_pages/webhooks.py", title="Webhooks", icon="📨", url_path="webhooks")
        )
    account = [st.Page(sign_out_page, title="Sign out", icon="🚪", url_path="sign_out")]
    navigation = st.navigation(
        {
            "Operations": operations,
            "Links": work,
            f"{actor.name} · {actor.role.value}": account,
            "": [customer_repair, oauth_return],
        }
    )
st.set_page_config(page_title="Linkdesk", page_icon="🔗", layout="wide")
navigation.run()
