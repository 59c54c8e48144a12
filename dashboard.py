"""Linkdesk's entrypoint: the sign-in gate and the pages each role may open, nothing else.

A page that is not passed to `st.navigation` cannot be reached, not even by URL, so the page list
is built from the signed-in person's role; a page the role may not open is replaced by a hidden
one at the same address that says which role it needs. The services check the role again before
they act.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.auth import Permission
from ui.auth import current_actor, role_notice_page, sign_in_page, sign_out_page
from ui.demo import demo_mode_on, demo_page_visible, show_demo_banner
from ui.errors import report, run_page

STAFF_PAGE_PATHS = (
    "overview",
    "links",
    "connect",
    "customer",
    "funnel",
    "activity",
    "webhooks",
    "alerts",
    "demo",
    "outreach",
    "outreach_admin",
    "staff_sessions",
)

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


def _notice(title: str, needs: str, url_path: str) -> st.Page:
    return st.Page(
        role_notice_page(title, needs),
        title=title,
        url_path=url_path,
        visibility="hidden",
    )


try:
    actor = current_actor()  # reads the staff session from the store
except Exception as error:
    # The store is down or locked: the designed panel, as on every page, not a traceback.
    st.set_page_config(page_title="Linkdesk", page_icon="🔗", layout="wide")
    report(error, where="sign-in")
    st.stop()
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
    demo_on = demo_mode_on()
    operations = [
        st.Page(
            "app_pages/overview.py",
            title="Overview",
            icon="📊",
            url_path="overview",
            default=True,  # the landing page: what broke, and where to look first
        ),
        st.Page("app_pages/funnel.py", title="Connect funnel", icon="🪜", url_path="funnel"),
    ]
    work = [
        st.Page("app_pages/links.py", title="Links", icon="🔗", url_path="links"),
        st.Page("app_pages/customer.py", title="Customer timeline", icon="👤", url_path="customer"),
    ]
    # Opened by URL without the role, these pages say why instead of falling back to Overview.
    not_allowed: list[st.Page] = []
    if actor.can(Permission.START_LINK):
        work.append(
            st.Page("app_pages/connect.py", title="Connect a bank", icon="➕", url_path="connect")
        )
    else:
        not_allowed.append(_notice("Connect a bank", "support or admin", "connect"))
    if actor.can(Permission.CUSTOMER_LINK):
        work.append(
            st.Page("app_pages/outreach.py", title="Outreach", icon="📧", url_path="outreach")
        )
    else:
        not_allowed.append(_notice("Outreach", "support or admin", "outreach"))
    work.append(st.Page("app_pages/activity.py", title="Activity", icon="🧾", url_path="activity"))
    if actor.can(Permission.SETTINGS):
        work.append(
            st.Page(
                "app_pages/outreach_admin.py",
                title="Outreach settings",
                icon="✉️",
                url_path="outreach_admin",
            )
        )
    else:
        not_allowed.append(_notice("Outreach settings", "admin", "outreach_admin"))
    # Everyone sees alerts; the service decides who may acknowledge, silence or edit rules.
    operations.append(st.Page("app_pages/alerts.py", title="Alerts", icon="🚨", url_path="alerts"))
    if actor.can(Permission.SYNC_TRIGGER):
        operations.append(
            st.Page("app_pages/webhooks.py", title="Webhooks", icon="📨", url_path="webhooks")
        )
        operations.append(
            st.Page(
                "app_pages/staff_sessions.py",
                title="Staff sessions",
                icon="🔑",
                url_path="staff_sessions",
            )
        )
    else:
        not_allowed.append(_notice("Webhooks", "admin", "webhooks"))
        not_allowed.append(_notice("Staff sessions", "admin", "staff_sessions"))
    if demo_page_visible(actor, demo_on):
        operations.append(st.Page("app_pages/demo.py", title="Demo", icon="🎭", url_path="demo"))
    else:
        needs = "support or admin" if demo_on else "admin"
        not_allowed.append(_notice("Demo", needs, "demo"))
    account = [st.Page(sign_out_page, title="Sign out", icon="🚪", url_path="sign_out")]
    navigation = st.navigation(
        {
            "Operations": operations,
            "Links": work,
            f"{actor.name} · {actor.role.value}": account,
            "": [customer_repair, oauth_return, *not_allowed],
        }
    )
st.set_page_config(page_title="Linkdesk", page_icon="🔗", layout="wide")
if actor is not None and demo_on:
    show_demo_banner()
# A page that fails (database locked or down, MoneyKit unreachable) shows a designed panel.
run_page(navigation.run)
