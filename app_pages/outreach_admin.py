"""Outreach settings (admins): customers' email addresses and the relink email's template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from linkdesk.auth import Permission
from linkdesk.errors import ServiceError
from linkdesk.mail import SmtpSettings
from linkdesk.services.outreach_setup import ImportReport
from linkdesk.services.outreach_text import PLACEHOLDERS, render_email
from ui.auth import require_actor
from ui.wiring import get_services

services = get_services()
outreach = services.outreach
actor = require_actor()

st.title("Outreach settings")
if not actor.can(Permission.SETTINGS):
    st.warning("Only admins change outreach settings.")
    st.stop()

smtp = SmtpSettings.from_settings(services.settings)
if smtp is None:
    st.error("Email is not set up: set LINKDESK_SMTP_HOST and the other LINKDESK_SMTP_* settings.")
else:
    st.text(
        f"Email goes through {smtp.host}:{smtp.port} (TLS: {smtp.tls}) from {smtp.sender}, at most "
        f"{services.settings.outreach_emails_per_minute} a minute."
    )

st.subheader("Customers' email addresses", divider="blue")
counts = outreach.address_count()
st.caption(
    f"{counts.get('moneykit', 0)} from MoneyKit (customer_user.email, kept up to date by the "
    f"sync) · {counts.get('import', 0)} imported. MoneyKit's address wins when both exist."
)
upload = st.file_uploader(
    "CSV file: customer id, email (one customer a line; a header row is optional)",
    type=["csv", "txt"],
    key="outreach_admin.csv",
)
if upload is not None and st.button("Import the addresses", key="outreach_admin.import"):
    try:
        st.session_state["outreach_admin.report"] = outreach.import_emails(upload.getvalue(), actor)
    except ServiceError as refused:
        st.error(str(refused))
report: ImportReport | None = st.session_state.get("outreach_admin.report")
if report is not None:
    st.success(
        f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged.",
        icon="📥",
    )
    if report.kept_from_moneykit:
        st.info(
            f"{len(report.kept_from_moneykit)} customers keep the address MoneyKit has for them."
        )
    if report.problems:
        bad = len(report.problems)
        st.error(f"{bad} row{' was' if bad == 1 else 's were'} not imported:")
        st.dataframe(
            [{"Line": problem.line, "Problem": problem.message} for problem in report.problems],
            key="outreach_admin.problems",
            hide_index=True,
        )

st.subheader("Relink email", divider="blue")
template = outreach.template()
if template.updated_by:
    st.text(f"Last changed by {template.updated_by} at {template.updated_at:%Y-%m-%d %H:%M} UTC.")
else:
    st.caption("The built-in email; change it below.")
st.caption(
    "Placeholders: "
    + ", ".join(f"`{{{{{name}}}}}`" for name in PLACEHOLDERS)
    + ". `{{link}}` must be in both bodies. In the HTML every value is escaped and `{{logo}}` is "
    "the bank's stored logo (or nothing)."
)
with st.form("outreach_admin.template"):
    subject = st.text_input("Subject", value=template.subject)
    text = st.text_area("Plain text", value=template.text, height=260)
    html_body = st.text_area("HTML", value=template.html, height=320)
    saved = st.form_submit_button("Save the template", type="primary")
if saved:
    try:
        outreach.save_template(subject, text, html_body, actor)
    except ServiceError as invalid:
        st.error(str(invalid))
    else:
        st.success("Saved. The next emails use it.", icon="✅")
if st.button("Back to the built-in email", key="outreach_admin.reset"):
    outreach.reset_template(actor)
    st.rerun()

with st.expander("Preview with sample values"):
    sample = render_email(
        outreach.template(),
        to="customer@example.com",
        institution_name="Example Bank",
        customer_id="cust_0001",
        link="https://linkdesk.example.com/repair?token=SAMPLE",
        expires_at=datetime.now(UTC) + timedelta(hours=services.settings.customer_link_ttl_hours),
        logo=None,
    )
    st.text(f"Subject: {sample.subject}")
    st.code(sample.text, language=None, wrap_lines=True)
    with st.container(border=True, height=380):
        st.html(sample.html)  # sanitised: an edited template cannot run scripts here
