"""Customer outreach: relink links emailed through a real SMTP server (aiosmtpd, in-process).

Runs on SQLite and PostgreSQL (``core_services``). The messages the server received are parsed
and read like a customer would: recipient, subject, plain and HTML parts, the link inside.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from linkdesk.auth import Actor, PermissionDenied, Role
from linkdesk.bootstrap import Services
from linkdesk.errors import ServiceError
from linkdesk.mail import MailError, OutgoingMail, SmtpSettings, send_mail
from linkdesk.read.links import LinkFilters
from linkdesk.services.errors import LiveLinkExists
from linkdesk.services.outreach import PLAN_MAX_AGE, OutreachChanged, OutreachService
from linkdesk.services.outreach_text import DEFAULT_TEMPLATE, TemplateInvalid, render_email
from linkdesk.store.models import CustomerEmail, CustomerLinkToken, OutreachMessage
from tests.smtp_inbox import Inbox, free_loopback_port, smtp_inbox
from tests.unit.conftest import FakeClock, FakeMoneyKit

SUPPORT = Actor("sam", Role.SUPPORT)
ADMIN = Actor("ada", Role.ADMIN)
VIEWER = Actor("vic", Role.VIEWER)
BASE = "https://linkdesk.example"
EXPIRED = LinkFilters(error_code="auth_expired")


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_inbox() as running:
        yield running


def outreach_for(
    services: Services, clock: FakeClock, port: int, **overrides: object
) -> OutreachService:
    """The service as bootstrap builds it, but sending to the given loopback SMTP port."""
    settings = services.settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_tls": "none", **overrides}
    )
    return OutreachService(
        store=services.store,
        links=services.links,
        customer_links=services.customer_links,
        audit=services.audit,
        settings=settings,
        clock=clock,
        sleep=lambda _seconds: None,
        wall=lambda: clock().timestamp(),
        monotonic=clock.seconds,
    )


@pytest.fixture
def world(core_services: Services, fake_moneykit: FakeMoneyKit) -> Services:
    fake_moneykit.add_institution("bank-b", "Bank <B> & Sons")
    for link_id, customer in [("mk_1", "cust_0001"), ("mk_2", "cust_0002"), ("mk_3", "cust_0003")]:
        fake_moneykit.add_link(
            link_id,
            institution_id="bank-b",
            institution_name="Bank <B> & Sons",
            state="error",
            error_code="auth_expired",
            tags=[f"customer:{customer}"],
        )
    fake_moneykit.add_link("mk_ok", institution_id="bank-b", tags=["customer:cust_0004"])
    fake_moneykit.add_link("mk_other_bank", state="error", error_code="auth_expired")
    core_services.discovery.sync_all()
    report = core_services.outreach.import_emails(
        "customer_id,email\ncust_0001,ana@example.com\ncust_0002,bo@example.org\n"
        "cust_0004,ok@example.com\n",
        ADMIN,
    )
    assert (report.added, report.problems) == (3, [])
    return core_services


BANK_B = LinkFilters(institution_id="bank-b")


def test_each_customer_gets_their_own_working_single_use_link(
    world: Services, core_clock: FakeClock, inbox: Inbox, fake_moneykit: FakeMoneyKit
):
    outreach = outreach_for(world, core_clock, inbox.port)
    plan = outreach.plan(BANK_B, SUPPORT)
    assert sorted(p.link_id for p in plan.to_send.shown) == ["mk_1", "mk_2"]
    assert [(p.link_id, p.reason) for p in plan.without_email.shown] == [
        ("mk_3", "no email address for this customer")
    ]
    assert [p.link_id for p in plan.not_needed.shown] == ["mk_ok"]

    campaign = outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=2)
    outreach.wait(campaign, timeout=60)
    progress = outreach.progress(campaign)
    assert progress is not None, outreach.messages(campaign)
    assert (progress.status, progress.sent, progress.skipped, progress.waiting) == (
        "done",
        2,
        1,
        0,
    )

    delivered = {m.envelope_to[0]: m for m in inbox.messages}
    assert sorted(delivered) == ["ana@example.com", "bo@example.org"]
    mail = delivered["ana@example.com"]
    assert mail.subject == "Please reconnect your Bank <B> & Sons account"
    assert "Bank <B> & Sons" in mail.text
    # The bank's name is escaped in the HTML, never markup.
    assert "Bank &lt;B&gt; &amp; Sons" in mail.html and "<B>" not in mail.html
    assert '<img src="data:image/svg+xml;base64,' in mail.html
    (link,) = mail.repair_links()
    assert link.startswith(f"{BASE}/repair?token=")
    assert link.replace("&amp;", "&") in mail.html.replace("&amp;", "&")
    other = delivered["bo@example.org"].repair_links()[0]
    assert other != link

    # The customer's link is theirs and works once; opening it is tracked.
    token = link.split("token=", 1)[1]
    stages = {t.link_id: t.stage for t in outreach.customer_tracking("cust_0001")}
    assert stages == {"mk_1": "sent"}
    started = world.customer_links.redeem_begin(token)
    assert started.link_id == "mk_1"
    (opened,) = outreach.customer_tracking("cust_0001")
    assert opened.stage == "opened" and opened.opened_at is not None
    fake_moneykit.links["mk_1"].update(state="connected", error_code=None)
    log = [
        {
            "session_id": started.session_id,
            "seq": 1,
            "type": "relink_success",
            "at": "2025-01-01T12:00:00.000Z",
            "data": {"institution": {"id": "bank-a"}, "link_id": "mk_1"},
        }
    ]
    assert world.customer_links.redeem_finish(token, log).outcome == "success"
    assert outreach.customer_tracking("cust_0001")[0].stage == "finished"
    assert outreach.link_stages(["mk_1", "mk_2", "mk_3"]) == {
        "mk_1": "finished",
        "mk_2": "sent",
        "mk_3": "not sent",
    }

    actions = [(e.action, e.outcome, e.customer_id) for e in world.audit.entries(link_id="mk_1")]
    assert ("outreach.send", "sent", "cust_0001") in actions
    assert ("customer_link.open", "opened", "cust_0001") in actions
    assert ("customer_link.finish", "success", "cust_0001") in actions
    funnel = outreach.funnel(core_clock.now - timedelta(days=1), core_clock.now + timedelta(1))
    assert (funnel.emailed, funnel.opened, funnel.finished, funnel.not_emailed) == (2, 1, 1, 1)


def test_the_screen_lists_the_first_rows_and_counts_and_sends_every_one(
    world: Services, core_clock: FakeClock, inbox: Inbox
):
    outreach = outreach_for(world, core_clock, inbox.port)
    plan = outreach.plan(BANK_B, SUPPORT, shown=1)
    # Every group counted in full; only the first link of each, as Links lists them, is a row.
    counts = [plan.to_send.count, plan.without_email.count, plan.not_needed.count]
    assert counts == [2, 1, 1]
    listed = [row.link_id for row in world.links.list_links(BANK_B).rows]
    assert [p.link_id for p in plan.to_send.shown] == [
        next(link for link in listed if link in ("mk_1", "mk_2"))
    ]
    assert not plan.to_send.complete and plan.without_email.complete
    # The campaign covers the group, not the rows the screen listed.
    campaign = outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=plan.to_send.count)
    outreach.wait(campaign, timeout=60)
    assert sorted(m.envelope_to[0] for m in inbox.messages) == ["ana@example.com", "bo@example.org"]
    skipped = [m.link_id for m in outreach.messages(campaign, statuses=("skipped",))]
    assert skipped == ["mk_3"]


def test_a_view_larger_than_a_campaign_covers_its_first_links_as_links_lists_them(
    world: Services, core_clock: FakeClock, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("linkdesk.read.outreach.MAX_CAMPAIGN_LINKS", 2)
    outreach = outreach_for(world, core_clock, inbox.port)
    plan = outreach.plan(BANK_B, SUPPORT)
    assert plan.truncated
    groups = [plan.to_send, plan.without_email, plan.live_link, plan.not_needed]
    covered = {p.link_id for group in groups for p in group.shown}
    assert sum(group.count for group in groups) == 2
    assert covered == {row.link_id for row in world.links.list_links(BANK_B, limit=2).rows}
    assert not outreach.plan(LinkFilters(institution_id="bank-b", search="mk_1"), SUPPORT).truncated


def test_the_screen_shares_a_plan_for_seconds_but_shows_outreach_own_changes_at_once(
    world: Services, core_clock: FakeClock, inbox: Inbox
):
    outreach = outreach_for(world, core_clock, inbox.port)
    assert outreach.plan(BANK_B, SUPPORT).without_email.count == 1
    # A change made elsewhere (an address stored directly) shows once the shared plan is old.
    with world.store.write() as session:
        session.add(
            CustomerEmail(
                customer_id="cust_0003",
                email="cy@example.net",
                source="import",
                updated_at=core_clock(),
                updated_by="test",
            )
        )
    assert outreach.plan(BANK_B, SUPPORT).without_email.count == 1
    assert outreach.plan(BANK_B, SUPPORT, shown=None).to_send.count == 3  # a campaign's read
    core_clock.advance(PLAN_MAX_AGE + 1)
    assert outreach.plan(BANK_B, SUPPORT).to_send.count == 3  # older: read again, then shown
    # Outreach's own change is shown on the next run: the campaign's links are live now.
    campaign = outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=3)
    outreach.wait(campaign, timeout=60)
    assert outreach.plan(BANK_B, SUPPORT).to_send.count == 0


def test_a_link_never_gets_a_second_live_link(world: Services, core_clock: FakeClock, inbox: Inbox):
    world.customer_links.create("mk_2", SUPPORT, reason="by phone")
    with pytest.raises(LiveLinkExists, match="already has a live customer relink link"):
        world.customer_links.create("mk_2", SUPPORT)

    outreach = outreach_for(world, core_clock, inbox.port)
    plan = outreach.plan(BANK_B, SUPPORT)
    assert [p.link_id for p in plan.to_send.shown] == ["mk_1"]
    (live,) = plan.live_link.shown
    assert live.link_id == "mk_2" and "sent by sam is live until" in (live.reason or "")
    campaign = outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=1)
    outreach.wait(campaign, timeout=60)
    assert [m.envelope_to for m in inbox.messages] == [["ana@example.com"]]
    skipped = {m.link_id: m.detail for m in outreach.messages(campaign, statuses=("skipped",))}
    assert set(skipped) == {"mk_2", "mk_3"}

    # Once the first link has expired, a new one may be sent.
    core_clock.advance(world.settings.customer_link_ttl_hours * 3600 + 1)
    assert world.customer_links.create("mk_2", SUPPORT).link_id == "mk_2"


def test_sending_keeps_to_the_rate(world: Services, core_clock: FakeClock, inbox: Inbox):
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        core_clock.advance(seconds)

    outreach = outreach_for(world, core_clock, inbox.port, outreach_emails_per_minute=6)
    outreach._limiter._sleep = sleep  # the service's own limiter, on the test's clock
    world.outreach.import_emails("cust_0003,cy@example.net\n", ADMIN)
    campaign = outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=3)
    outreach.wait(campaign, timeout=60)
    assert len(inbox.messages) == 3
    # Six a minute: the first at once, then one every ten seconds.
    assert [round(w) for w in waits if w > 0] == [10, 10]


def test_the_view_changed_since_the_preview(world: Services, core_clock: FakeClock, inbox: Inbox):
    outreach = outreach_for(world, core_clock, inbox.port)
    with pytest.raises(OutreachChanged, match="2 customers to email instead of 3"):
        outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=3)
    assert inbox.messages == []


def test_roles_are_enforced_in_the_service(world: Services, core_clock: FakeClock, inbox: Inbox):
    outreach = outreach_for(world, core_clock, inbox.port)
    with pytest.raises(PermissionDenied):
        outreach.plan(BANK_B, VIEWER)
    with pytest.raises(PermissionDenied):
        outreach.start(BANK_B, VIEWER, base_url=BASE, expected=2)
    with pytest.raises(PermissionDenied):
        outreach.resume("any-campaign", VIEWER)
    with pytest.raises(PermissionDenied):
        outreach.stop("any-campaign", VIEWER)
    with pytest.raises(PermissionDenied):
        outreach.import_emails("cust_0003,x@example.com\n", SUPPORT)
    with pytest.raises(PermissionDenied):
        outreach.save_template("s", "{{link}}", "{{link}}", SUPPORT)
    assert inbox.messages == []


def test_a_failed_delivery_is_recorded_and_its_link_retired(world: Services, core_clock: FakeClock):
    nobody_listens = free_loopback_port()
    outreach = outreach_for(world, core_clock, nobody_listens, smtp_timeout_seconds=5)
    campaign = outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=2)
    outreach.wait(campaign, timeout=60)
    failed = outreach.messages(campaign, statuses=("failed",))
    assert len(failed) == 2
    assert all("cannot reach the SMTP server 127.0.0.1" in (m.detail or "") for m in failed)
    with world.store.read() as session:
        tokens = session.scalars(sa.select(CustomerLinkToken)).all()
    assert len(tokens) == 2 and all(t.outcome == "not_sent" and t.used_at for t in tokens)
    # Nothing live is left behind: a second campaign may email them.
    assert outreach.plan(BANK_B, SUPPORT).to_send.count == 2


def test_an_interrupted_send_retires_the_undelivered_link_and_resumes(
    world: Services, core_clock: FakeClock, inbox: Inbox
):
    started: list[object] = []
    outreach = outreach_for(world, core_clock, inbox.port)
    outreach._runner = lambda target, name: started.append(target)
    campaign = outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=2)
    assert inbox.messages == [] and len(started) == 1
    # As if a sender made mk_1's link and died before handing the email to the server.
    made = world.customer_links.create("mk_1", SUPPORT)
    with world.store.write() as session:
        session.execute(
            sa.update(OutreachMessage)
            .where(OutreachMessage.campaign_id == campaign, OutreachMessage.link_id == "mk_1")
            .values(status="sending", token_id=made.id)
        )
    outreach.run(campaign)
    assert sorted(m.envelope_to[0] for m in inbox.messages) == ["ana@example.com", "bo@example.org"]
    with world.store.read() as session:
        old = session.get(CustomerLinkToken, made.id)
    assert old is not None and old.outcome == "not_sent"


def test_an_expired_link_shows_as_expired(world: Services, core_clock: FakeClock, inbox: Inbox):
    outreach = outreach_for(world, core_clock, inbox.port)
    campaign = outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=2)
    outreach.wait(campaign, timeout=60)
    core_clock.advance(world.settings.customer_link_ttl_hours * 3600 + 1)
    assert outreach.customer_tracking("cust_0002")[0].stage == "expired"
    funnel = outreach.funnel(datetime(2000, 1, 1, tzinfo=UTC), core_clock.now + timedelta(1))
    assert (funnel.emailed, funnel.expired, funnel.finished) == (2, 2, 0)


def test_stopping_a_campaign_sends_nothing_more(
    world: Services, core_clock: FakeClock, inbox: Inbox
):
    outreach = outreach_for(world, core_clock, inbox.port)
    outreach._runner = lambda target, name: None
    campaign = outreach.start(BANK_B, SUPPORT, base_url=BASE, expected=2)
    outreach.stop(campaign, SUPPORT)
    outreach.run(campaign)
    assert inbox.messages == []
    progress = outreach.progress(campaign)
    assert progress is not None and (progress.status, progress.skipped) == ("stopped", 3)


def test_csv_import_reports_bad_rows_with_line_numbers(world: Services):
    report = world.outreach.import_emails(
        (
            b"customer_id,email\n"
            b"cust_0003,cy@example.net\n"
            b"cust_0005,not-an-address\n"
            b"cust_0006\n"
            b"\n"
            b"cust_0003,again@example.net\n"
            b"cust_0001,ana.new@example.com\n"
            b"cust_0007,a@b.c,extra\n"
        ),
        ADMIN,
    )
    assert (report.added, report.updated) == (1, 1)
    assert [(p.line, p.message) for p in report.problems] == [
        (3, "'not-an-address' is not a valid email address"),
        (4, "expected 2 columns, found 1"),
        (6, "customer cust_0003 is on line 2 already"),
        (8, "expected 2 columns, found 3"),
    ]
    with pytest.raises(ServiceError, match="not UTF-8"):
        world.outreach.import_emails(b"\xff\xfe\x00bad", ADMIN)


def test_moneykit_customer_email_is_used_and_wins_over_an_import(
    core_services: Services, fake_moneykit: FakeMoneyKit
):
    link = fake_moneykit.add_link(
        "mk_mail", state="error", error_code="auth_expired", tags=["customer:cust_0009"]
    )
    link["customer_user"] = {"id": "cust_0009", "email": {"address": "from.mk@example.com"}}
    core_services.discovery.sync_all()
    report = core_services.outreach.import_emails("cust_0009,other@example.com\n", ADMIN)
    assert report.kept_from_moneykit == ["cust_0009"]
    (planned,) = core_services.outreach.plan(EXPIRED, SUPPORT).to_send.shown
    assert (planned.email, planned.email_source) == ("from.mk@example.com", "moneykit")


def test_template_is_validated_and_editable(world: Services, core_clock: FakeClock, inbox: Inbox):
    outreach = outreach_for(world, core_clock, inbox.port)
    with pytest.raises(TemplateInvalid, match=r"unknown placeholder \{\{bank\}\} in the text"):
        outreach.save_template("Hi", "{{bank}} {{link}}", "{{link}}", ADMIN)
    with pytest.raises(TemplateInvalid, match=r"the HTML must contain \{\{link\}\}"):
        outreach.save_template("Hi", "{{link}}", "<p>no link</p>", ADMIN)
    outreach.save_template(
        "Reconnect {{institution_name}} now",
        "Go to {{link}}",
        "<p>{{logo}}<a href='{{link}}'>{{institution_name}}</a></p>",
        ADMIN,
    )
    (planned, _) = outreach.plan(BANK_B, SUPPORT).to_send.shown
    preview = outreach.preview(planned, BASE)
    assert preview.subject == "Reconnect Bank <B> & Sons now"
    assert preview.text == f"Go to {BASE}/repair?token=PREVIEW-NOT-A-WORKING-LINK"
    assert ">Bank &lt;B&gt; &amp; Sons</a>" in preview.html
    outreach.reset_template(ADMIN)
    assert outreach.template().subject == DEFAULT_TEMPLATE.subject


def test_logo_only_as_a_stored_data_uri():
    def html_with(logo: str | None) -> str:
        return render_email(
            DEFAULT_TEMPLATE,
            to="a@example.com",
            institution_name='Bank "X"',
            customer_id="c",
            link="https://l.example/repair?token=t",
            expires_at=datetime(2026, 1, 1, tzinfo=UTC),
            logo=logo,
        ).html

    assert "<img" not in html_with("https://tracker.example/logo.png")
    assert "<img" not in html_with('data:image/png;base64,AA" onerror="x')
    assert "<img" not in html_with(None)
    assert '<img src="data:image/png;base64,iVBORw0=" alt="Bank &quot;X&quot;"' in html_with(
        "data:image/png;base64,iVBORw0="
    )


def test_starttls_is_refused_when_the_server_does_not_offer_it(inbox: Inbox):
    smtp = SmtpSettings(
        host="127.0.0.1",
        port=inbox.port,
        tls="starttls",
        password=None,
        sender="Support <support@example.com>",
    )
    mail = OutgoingMail("a@example.com", "s", "t")
    with pytest.raises(MailError, match="does not offer STARTTLS"):
        send_mail(smtp, mail)
    assert inbox.messages == []
    plain = SmtpSettings(host="127.0.0.1", port=inbox.port, tls="none", sender="s@example.com")
    send_mail(plain, OutgoingMail("a@example.com", "Hello\r\nBcc: x@evil.example", "t"))
    (delivered,) = inbox.wait_for(1)
    assert delivered.envelope_to == ["a@example.com"]
    assert delivered.subject == "Hello Bcc: x@evil.example" and delivered.message["Bcc"] is None


def test_the_smtp_password_is_never_shown():
    from pydantic import SecretStr

    smtp = SmtpSettings(host="h", port=1, password=SecretStr("hunter2-secret"))
    assert "hunter2" not in repr(smtp)


def test_two_agents_at_the_same_moment_make_one_live_link(world: Services):
    world.customer_links.create("mk_2", SUPPORT)  # the signing key exists before the race
    start = threading.Barrier(4)
    results: list[str] = []

    def attempt() -> None:
        start.wait()
        try:
            results.append(world.customer_links.create("mk_1", SUPPORT).id)
        except LiveLinkExists:
            results.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and results.count("refused") == 3
    with world.store.read() as session:
        live = session.scalars(
            sa.select(CustomerLinkToken.id).where(CustomerLinkToken.link_id == "mk_1")
        ).all()
    assert len(live) == 1
