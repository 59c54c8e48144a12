"""The outreach pages through AppTest, sending to a real SMTP server (aiosmtpd) in the process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from linkdesk.auth import Actor, Role
from linkdesk.read.links import LinkFilters
from linkdesk.store import Store
from tests.app.conftest import dashboard
from tests.app.test_customer_page import open_private_store
from tests.smtp_inbox import Inbox, smtp_inbox
from ui.wiring import get_services

ADMIN = Actor("apptest-admin", Role.ADMIN)
PUBLIC = "http://linkdesk.test"


@pytest.fixture()
def inbox() -> Iterator[Inbox]:
    with smtp_inbox() as running:
        yield running


@pytest.fixture()
def outreach_env(
    app_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inbox: Inbox
) -> Iterator[Store]:
    monkeypatch.setenv("LINKDESK_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("LINKDESK_SMTP_PORT", str(inbox.port))
    monkeypatch.setenv("LINKDESK_SMTP_TLS", "none")
    monkeypatch.setenv("LINKDESK_SMTP_SENDER", "Support <support@example.com>")
    monkeypatch.setenv("LINKDESK_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("LINKDESK_SIGNING_KEY_FILE", str(tmp_path / "signing.key"))
    yield from open_private_store(app_env, tmp_path, monkeypatch)


def table_with(app: AppTest, column: str) -> pd.DataFrame:
    """The first table of the page that has ``column``."""
    for frame in app.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a {column!r} column")


def expired_links() -> dict[str, str | None]:
    """link id -> customer id (if any) of every link with an expired login."""
    rows = get_services().links.list_links(LinkFilters(error_code="auth_expired"), limit=1000)
    return {row.link_id: row.customer_id for row in rows.rows}


def give_addresses(customers: list[str]) -> None:
    csv = "".join(f"{customer},{customer}@example.com\n" for customer in customers)
    report = get_services().outreach.import_emails(csv, ADMIN)
    assert report.problems == []


def test_links_offers_outreach_for_its_filtered_view(app_env: str) -> None:
    app = dashboard(page="links", error="auth_expired").run()
    assert not app.exception
    links = [(p.proto.label, parse_qs(p.proto.query_string)) for p in app.get("page_link")]
    assert ("Email relink links to these customers", {"error": ["auth_expired"]}) in links

    viewer = dashboard(role=Role.VIEWER, page="links", error="auth_expired").run()
    labels = [p.proto.label for p in viewer.get("page_link")]
    assert "Email relink links to these customers" not in labels


def test_preview_confirm_and_send_from_a_filtered_view(outreach_env: Store, inbox: Inbox) -> None:
    links = expired_links()
    customers = sorted({c for c in links.values() if c})
    assert len(customers) >= 3
    with_address, without = customers[:-1], customers[-1]
    give_addresses(with_address)
    # One email per link: a customer with two broken links gets two links.
    emailed = sorted(f"{c}@example.com" for c in links.values() if c and c != without)
    not_emailed = sorted(link for link, c in links.items() if c is None or c == without)
    assert len(emailed) > 1

    app = dashboard(page="outreach", error="auth_expired").run()
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["To email"] == str(len(emailed))
    assert metrics["Without an email address"] == str(len(not_emailed))
    listed = table_with(app, "Why not emailed")
    assert sorted(listed["Link"]) == not_emailed
    reasons = dict(zip(listed["Link"], listed["Why not emailed"], strict=True))
    assert reasons == {
        link: "no customer id on the link"
        if links[link] is None
        else "no email address for this customer"
        for link in not_emailed
    }
    texts = [t.value for t in app.text]
    assert any(t.startswith("Subject: Please reconnect your ") for t in texts)
    assert any(t.startswith("To: ") and t[4:] in emailed for t in texts)
    assert f"{PUBLIC}/repair?token=PREVIEW-NOT-A-WORKING-LINK" in app.code[0].value

    send = app.button(key="outreach.send")
    assert send.disabled  # not before the count is confirmed
    app.checkbox(key="outreach.confirm").check().run()
    app.button(key="outreach.send").click().run()
    assert not app.exception
    campaign = app.query_params["campaign"]
    campaign_id = campaign[0] if isinstance(campaign, list) else campaign
    get_services().outreach.wait(campaign_id, timeout=120)

    delivered = inbox.wait_for(len(emailed))
    assert sorted(m.envelope_to[0] for m in delivered) == emailed
    assert all(len(m.repair_links()) == 1 for m in delivered)
    assert all(m.repair_links()[0].startswith(f"{PUBLIC}/repair?token=") for m in delivered)

    app.run()
    assert any(f"Done: {len(emailed)} relink emails sent." in s.value for s in app.success)
    problems = table_with(app, "Why")
    assert sorted(problems["Link"]) == not_emailed

    # The customer's timeline shows the email, and the funnel counts it.
    timeline = dashboard(page="customer", customer=with_address[0]).run()
    table = table_with(timeline, "Where it stands")
    assert set(table["Where it stands"]) == {"📧 Sent"}
    funnel = dashboard(page="funnel").run()
    metrics = {m.label: m.value for m in funnel.metric}
    assert metrics["Emailed"] == str(len(emailed))
    assert metrics["Not emailed"] == str(len(not_emailed))

    # The Links table shows where each emailed link stands.
    listed = dashboard(page="links", error="auth_expired").run()
    rows = table_with(listed, "Outreach")
    signs = dict(zip(rows["Link ID"], rows["Outreach"], strict=True))
    sent_links = {link for link, c in links.items() if c and c != without}
    assert {signs[link] for link in sent_links if link in signs} == {"📧"}
    # Links the campaign could not email (no address) are marked as not sent.
    assert {signs[link] for link in not_emailed if link in signs} <= {"📤"}


def test_a_viewer_cannot_open_outreach(app_env: str) -> None:
    app = dashboard(role=Role.VIEWER, page="outreach").run()
    assert not [t for t in app.title if t.value == "Email relink links to customers"]


def admin_page() -> AppTest:
    app = dashboard(role=Role.ADMIN, page="outreach_admin").run()
    assert not app.exception
    return app


def test_admins_edit_the_template_and_bad_templates_are_refused(outreach_env: Store) -> None:
    app = admin_page()
    app.text_area[0].set_value("No link here")
    app.button[0].click().run()  # the form's submit button comes first
    assert any("the text must contain {{link}}" in e.value for e in app.error)

    app.text_input[0].set_value("Reconnect {{institution_name}}, please")
    app.text_area[0].set_value("Open {{link}}")
    app.button[0].click().run()
    assert any("Saved" in s.value for s in app.success)
    assert get_services().outreach.template().subject == "Reconnect {{institution_name}}, please"


def test_support_cannot_open_outreach_settings(app_env: str) -> None:
    app = dashboard(role=Role.SUPPORT, page="outreach_admin").run()
    # The page says which role it needs instead of showing the settings.
    assert not app.text_area and not app.get("file_uploader")
    assert any("needs the admin role" in w.value for w in app.warning)
