"""Email relink links: every affected customer of a filtered Links view gets their own link.

Opened from the Links page with its filters as query parameters. Shows who will be emailed and
who not (with why), a preview for one real customer, asks to confirm the count, then follows the
campaign that a background thread sends (``?campaign=<id>``).
"""

from __future__ import annotations

import streamlit as st

from linkdesk.auth import Permission
from linkdesk.errors import ServiceError
from linkdesk.services.outreach import MAX_CAMPAIGN_LINKS
from linkdesk.services.outreach_text import filters_from_params
from ui.auth import require_actor
from ui.links_filters import filters_in_url
from ui.outreach import dashboard_origin, plan_table
from ui.outreach_campaign import render_campaign
from ui.wiring import get_services

services = get_services()
outreach = services.outreach
actor = require_actor()

st.title("Email relink links to customers")
if not actor.can(Permission.CUSTOMER_LINK):
    st.warning("Sending relink emails needs the support or admin role.")
    st.stop()


campaign_id = st.query_params.get("campaign")
if campaign_id:
    render_campaign(services, actor, campaign_id)
    st.page_link("app_pages/outreach.py", label="Start another outreach", icon="📧")
    st.stop()

params = filters_in_url()
try:
    filters = filters_from_params(params)
except ServiceError as bad:
    st.error(str(bad))
    st.stop()
plan = outreach.plan(filters, actor)
st.text(f"Links view: {plan.description}")
st.page_link(
    "app_pages/links.py",
    label="Back to this Links view",
    icon="🔗",
    query_params=params,
)
cols = st.columns(4)
cols[0].metric("To email", plan.to_send.count)
cols[1].metric("Without an email address", plan.without_email.count)
cols[2].metric("Relink link already live", plan.live_link.count)
cols[3].metric("Do not need a relink", plan.not_needed.count)
if plan.truncated:
    st.warning(
        f"More links match than one campaign covers: these are the first {MAX_CAMPAIGN_LINKS:,} "
        "by link id. Narrow the filters on Links for the others."
    )
if not plan.email_configured:
    st.error(
        "Email is not set up on this server: an administrator sets LINKDESK_SMTP_HOST and the "
        "other LINKDESK_SMTP_* settings."
    )
unsent = plan.without_email.count + plan.live_link.count
if unsent:
    with st.expander(
        f"Not emailed: {unsent:,} link{'' if unsent == 1 else 's'} (and why)",
        expanded=bool(plan.without_email.count),
    ):
        plan_table([plan.without_email, plan.live_link], "outreach.listed")
        if plan.without_email.count and actor.can(Permission.SETTINGS):
            st.page_link("app_pages/outreach_admin.py", label="Import email addresses", icon="📥")
count = plan.to_send.count
if not count:
    st.info("Nobody in this view can be emailed a relink link.")
    st.stop()

with st.expander(f"Links to email, one email each ({count:,})"):
    plan_table([plan.to_send], "outreach.to_send")

st.subheader("Preview", divider="blue")
by_link = {row.link_id: row for row in plan.to_send.shown}
chosen = st.selectbox(
    "Preview the email of",
    list(by_link),
    format_func=lambda link_id: (
        f"{by_link[link_id].customer_id} · {by_link[link_id].institution_name} · {link_id}"
    ),
    key="outreach.preview_link",
)
try:
    preview = outreach.preview(by_link[chosen or next(iter(by_link))], dashboard_origin())
except ServiceError as problem:
    st.error(str(problem))
    st.stop()
st.text(f"To: {preview.to}")
st.text(f"Subject: {preview.subject}")
text_tab, html_tab = st.tabs(["Plain text", "HTML"])
with text_tab:
    st.code(preview.text, language=None, wrap_lines=True)
# The email as a mail client shows it; st.html sanitises it (no scripts), and the values from
# outside are escaped by the template already.
html_tab.container(border=True, height=420).html(preview.html)
st.caption("The preview's link does not work; each customer's email carries their own link.")

confirmed = st.checkbox(
    f"I checked the preview: send {count} relink email{'' if count == 1 else 's'}, "
    "each with its own single-use link",
    key="outreach.confirm",
)
if st.button(
    f"Send {count} relink email{'' if count == 1 else 's'}",
    type="primary",
    disabled=not confirmed or not plan.email_configured,
    key="outreach.send",
):
    try:
        started = outreach.start(filters, actor, base_url=dashboard_origin(), expected=count)
    except ServiceError as refused:
        st.error(str(refused))
    else:
        st.session_state.pop("outreach.confirm", None)
        st.query_params["campaign"] = started
        st.rerun()

recent = outreach.recent_campaigns(limit=5)
if recent:
    st.subheader("Recent outreach", divider="gray")
    for done in recent:
        when, what = st.columns([1, 3], vertical_alignment="center")
        with when:
            st.page_link(
                "app_pages/outreach.py",
                label=f"{done.created_at:%Y-%m-%d %H:%M} UTC",
                icon="📧",
                query_params={"campaign": done.id},
            )
        what.text(f"{done.description} · {done.sent} sent of {done.total} · {done.status}")
