"""Customer outreach: email each affected customer their own single-use relink link.

After an outage or a credentials rotation a support agent picks the broken links on the Links
page (any filter), previews the email for one real customer, confirms the count, and a
background thread sends one email per link, at most ``LINKDESK_OUTREACH_EMAILS_PER_MINUTE``.
Each email carries a fresh customer relink link (:class:`CustomerLinkService`), so a link never
gets a second live one: a link that already has one is listed and not emailed.

Addresses come from MoneyKit's ``customer_user.email`` (stored during sync), else from a CSV
import by an admin. Customers without one are listed in the plan and in the campaign's report.

Tracking per email: sent → opened (the repair page validated the token) → finished, or expired
(:mod:`~linkdesk.services.outreach_tracking`); the template and its text are in
:mod:`~linkdesk.services.outreach_text`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa

from linkdesk.auth import Actor, Permission, Role, as_actor, require
from linkdesk.errors import ServiceError
from linkdesk.mail import MailError, OutgoingMail, SmtpSettings, send_mail
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.read.outreach import (
    MAX_CAMPAIGN_LINKS,
    OutreachGroup,
    OutreachReads,
    PlannedEmail,
)
from linkdesk.services.audit import AuditLog
from linkdesk.services.customer_links import CustomerLinkService
from linkdesk.services.outreach_setup import ImportReport, OutreachSetup
from linkdesk.services.outreach_text import (
    RenderedEmail,
    describe_filters,
    filters_as_json,
    render_email,
)
from linkdesk.services.outreach_tracking import (
    OutreachTracking,
)
from linkdesk.services.ratelimit import RateLimiter
from linkdesk.settings import Settings
from linkdesk.store.engine import Store
from linkdesk.store.models import (
    CustomerLinkToken,
    Institution,
    Link,
    OutreachCampaign,
    OutreachMessage,
)

__all__ = [
    "MAX_CAMPAIGN_LINKS",
    "EmailNotConfigured",
    "OutreachChanged",
    "OutreachPlan",
    "OutreachService",
    "PlannedEmail",
]

logger = logging.getLogger("linkdesk.outreach")

# The screen lists this many links of each group; the counts and a campaign cover every one.
PLAN_ROWS_SHOWN = 200
# The screen's plan is shared this many seconds by every session showing the same view (an
# agent's clicks rerun the page); a campaign checks the count against the view read afresh, and
# outreach's own changes are shown at once (OutreachReads.forget_views).
PLAN_MAX_AGE = 10.0
_CLAIM = timedelta(minutes=2)
# Bank names change rarely; the shared list is read again after this many seconds.
_NAMES_MAX_AGE = 300.0


class OutreachChanged(ServiceError):
    pass


class EmailNotConfigured(ServiceError):
    def __init__(self) -> None:
        super().__init__("Email is not set up: set LINKDESK_SMTP_HOST (see the README).")


@dataclass(frozen=True, slots=True)
class OutreachPlan:
    """What a filtered view's outreach would do: each group's count and first rows."""

    description: str
    to_send: OutreachGroup
    without_email: OutreachGroup
    live_link: OutreachGroup
    not_needed: OutreachGroup
    truncated: bool
    email_configured: bool


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _base_url(value: str | None) -> str:
    parts = urlsplit((value or "").strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ServiceError(
            "Linkdesk does not know its own address for the emailed links: set LINKDESK_PUBLIC_URL."
        )
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _thread_runner(target: Callable[[], None], name: str) -> threading.Thread:
    def logged() -> None:
        try:
            target()
        except Exception:
            # The campaign keeps its waiting emails; the page offers to resume once the claim
            # of this sender has run out.
            logger.exception("outreach sender %s stopped", name)

    thread = threading.Thread(target=logged, name=name, daemon=True)
    thread.start()
    return thread


class OutreachService(OutreachSetup, OutreachTracking):
    def __init__(
        self,
        *,
        store: Store,
        links: LinkQueries,
        customer_links: CustomerLinkService,
        audit: AuditLog,
        settings: Settings,
        clock: Callable[[], datetime] | None = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        mailer: Callable[[OutgoingMail], object] | None = None,
        runner: Callable[[Callable[[], None], str], threading.Thread | None] = _thread_runner,
        sender_id: str | None = None,
    ) -> None:
        self._store = store
        self._links = links
        self._customer_links = customer_links
        self._audit = audit
        self._settings = settings
        self._clock = clock or _utcnow
        self._reads = OutreachReads(store, links, clock=self._clock, monotonic=monotonic)
        self._mailer = mailer
        self._runner = runner
        self._sender_id = sender_id or f"outreach-{uuid.uuid4().hex[:8]}"
        # Shared by every campaign this process sends, so two campaigns do not double the rate.
        self._limiter = RateLimiter(
            settings.outreach_emails_per_minute, burst=1, wall=wall, sleep=sleep
        )
        self._threads: dict[str, threading.Thread] = {}

    # -- email delivery --------------------------------------------------------------------------

    @property
    def email_configured(self) -> bool:
        return self._mailer is not None or SmtpSettings.from_settings(self._settings) is not None

    def _deliver(self, mail: OutgoingMail) -> None:
        if self._mailer is not None:
            self._mailer(mail)
            return
        smtp = SmtpSettings.from_settings(self._settings)
        if smtp is None:
            raise MailError("email is not set up (LINKDESK_SMTP_HOST is unset)")
        send_mail(smtp, mail)

    def import_emails(self, data: str | bytes, actor: Actor | str) -> ImportReport:
        report = super().import_emails(data, actor)
        self._reads.forget_views()  # customers who had no address may be emailed now
        return report

    # -- planning and preview --------------------------------------------------------------------

    def plan(
        self, filters: LinkFilters, actor: Actor | str, *, shown: int | None = PLAN_ROWS_SHOWN
    ) -> OutreachPlan:
        """Who the filtered view would email, and who not (with why): every group's count and
        its first ``shown`` links (``None``: every one)."""
        actor = as_actor(actor, self._settings.default_role)
        require(actor, Permission.CUSTOMER_LINK)
        if shown is None:
            view = self._reads.view(filters, self._clock(), shown=None)
        else:
            view = self._reads.shared_view(filters, shown=shown, max_age=PLAN_MAX_AGE)
        institution_name = None
        if filters.institution_id:
            names = self._links.institution_names(max_age=_NAMES_MAX_AGE)
            institution_name = names.get(filters.institution_id)
        return OutreachPlan(
            description=describe_filters(filters, institution_name),
            to_send=view.to_send,
            without_email=view.without_email,
            live_link=view.live_link,
            not_needed=view.not_needed,
            truncated=view.truncated,
            email_configured=self.email_configured,
        )

    def preview(self, planned: PlannedEmail, base_url: str | None) -> RenderedEmail:
        """The email ``planned`` would get, with a sample link that does not work."""
        base = _base_url(self._settings.public_url or base_url)
        return self._render(
            planned.link_id,
            to=planned.email or "",
            customer_id=planned.customer_id or "",
            link=f"{base}/repair?token=PREVIEW-NOT-A-WORKING-LINK",
            expires_at=self._clock() + timedelta(hours=self._settings.customer_link_ttl_hours),
        )

    def _render(
        self, link_id: str, *, to: str, customer_id: str, link: str, expires_at: datetime
    ) -> RenderedEmail:
        with self._store.read() as session:
            found = session.execute(
                sa.select(Institution.name, Institution.logo, Institution.avatar)
                .join(Link, Link.institution_id == Institution.institution_id)
                .where(Link.link_id == link_id)
            ).first()
        name, logo = (found.name, found.logo or found.avatar) if found else ("your bank", None)
        return render_email(
            self.template(),
            to=to,
            institution_name=name,
            customer_id=customer_id,
            link=link,
            expires_at=expires_at,
            logo=logo,
        )

    # -- campaigns -------------------------------------------------------------------------------

    def start(
        self,
        filters: LinkFilters,
        actor: Actor | str,
        *,
        base_url: str | None,
        expected: int,
    ) -> str:
        """Create the campaign for the filtered view and start sending it in the background.

        ``expected`` is the count the agent confirmed; when the view changed since, nothing is
        sent and :class:`OutreachChanged` says so.
        """
        actor = as_actor(actor, self._settings.default_role)
        require(actor, Permission.CUSTOMER_LINK)
        if not self.email_configured:
            raise EmailNotConfigured()
        base = _base_url(self._settings.public_url or base_url)
        plan = self.plan(filters, actor, shown=None)
        if plan.to_send.count != expected:
            raise OutreachChanged(
                f"The view now has {plan.to_send.count} customers to email instead of {expected}; "
                "look at the preview again."
            )
        if not plan.to_send.count:
            raise ServiceError("Nobody to email in this view.")
        campaign_id = uuid.uuid4().hex
        now = self._clock()
        with self._store.write() as session:
            session.add(
                OutreachCampaign(
                    id=campaign_id,
                    created_by=actor.name,
                    created_role=actor.role.value,
                    created_at=now,
                    filters=filters_as_json(filters),
                    description=plan.description[:500],
                    repair_base_url=base,
                    status="sending",
                )
            )
            session.flush()
            for planned in [*plan.to_send.shown, *plan.without_email.shown, *plan.live_link.shown]:
                session.add(
                    OutreachMessage(
                        campaign_id=campaign_id,
                        link_id=planned.link_id,
                        customer_id=planned.customer_id,
                        institution_id=planned.institution_id,
                        email=planned.email,
                        status="pending" if planned.reason is None else "skipped",
                        detail=planned.reason,
                        created_at=now,
                    )
                )
            self._audit.add(
                session,
                actor=actor,
                action="outreach.start",
                outcome="started",
                detail=(
                    f"campaign {campaign_id[:8]} ({plan.description}): {plan.to_send.count} to "
                    f"email, {plan.without_email.count} without an address, "
                    f"{plan.live_link.count} with a live relink link"
                ),
            )
        self._reads.forget_views()
        self._launch(campaign_id)
        return campaign_id

    def resume(self, campaign_id: str, actor: Actor | str) -> bool:
        """Send the campaign's waiting emails in the background again (its sender stopped)."""
        actor = as_actor(actor, self._settings.default_role)
        require(actor, Permission.CUSTOMER_LINK)
        self._audit.record(
            actor=actor,
            action="outreach.resume",
            outcome="resumed",
            detail=f"campaign {campaign_id[:8]}",
        )
        return self._launch(campaign_id)

    def _launch(self, campaign_id: str) -> bool:
        if (thread := self._threads.get(campaign_id)) is not None and thread.is_alive():
            return False
        started = self._runner(lambda: self.run(campaign_id), f"outreach-{campaign_id[:8]}")
        if started is not None:
            self._threads[campaign_id] = started
        return True

    def wait(self, campaign_id: str, timeout: float | None = None) -> None:
        """Until this process's sender of ``campaign_id`` has finished (for tests and the CLI)."""
        thread = self._threads.get(campaign_id)
        if thread is not None:
            thread.join(timeout)

    def _claim(self, campaign_id: str) -> bool:
        now = self._clock()
        with self._store.write() as session:
            won = session.execute(
                sa.update(OutreachCampaign)
                .where(
                    OutreachCampaign.id == campaign_id,
                    OutreachCampaign.status == "sending",
                    sa.or_(
                        OutreachCampaign.claimed_by == self._sender_id,
                        OutreachCampaign.claimed_until.is_(None),
                        OutreachCampaign.claimed_until < now,
                    ),
                )
                .values(claimed_by=self._sender_id, claimed_until=now + _CLAIM)
            )
        return bool(won.rowcount == 1)  # type: ignore[attr-defined]

    def run(self, campaign_id: str) -> None:
        """Send every waiting email of the campaign, rate-limited; safe to call again."""
        if not self._claim(campaign_id):
            return
        with self._store.read() as session:
            campaign = session.get(OutreachCampaign, campaign_id)
            assert campaign is not None
            sender = Actor(campaign.created_by, Role(campaign.created_role))
            base = campaign.repair_base_url
        while self._claim(campaign_id):
            with self._store.read() as session:
                message = session.scalars(
                    sa.select(OutreachMessage)
                    .where(
                        OutreachMessage.campaign_id == campaign_id,
                        OutreachMessage.status.in_(("pending", "sending")),
                    )
                    .order_by(OutreachMessage.id)
                    .limit(1)
                ).first()
            if message is None:
                self._finish(campaign_id, sender)
                return
            if message.status == "sending" and message.token_id:
                # A sender stopped between making the link and sending it: that link was never
                # delivered, so it is retired before a new one is made.
                self._retire_token(message.token_id)
            self._limiter.acquire()
            self._send_one(message, sender, base, campaign_id)

    def _send_one(
        self, message: OutreachMessage, sender: Actor, base: str, campaign_id: str
    ) -> None:
        try:
            made = self._customer_links.create(
                message.link_id, sender, reason=f"Relink email (outreach {campaign_id[:8]})"
            )
        except ServiceError as refused:
            self._set_message(message.id, status="skipped", detail=str(refused)[:500])
            return
        self._set_message(message.id, status="sending", token_id=made.id)
        rendered = self._render(
            message.link_id,
            to=message.email or "",
            customer_id=message.customer_id or "",
            link=f"{base}/repair?token={made.token}",
            expires_at=made.expires_at,
        )
        try:
            self._deliver(OutgoingMail(rendered.to, rendered.subject, rendered.text, rendered.html))
        except MailError as failure:
            self._retire_token(made.id)
            self._set_message(message.id, status="failed", detail=str(failure)[:500])
            self._audit.record(
                actor=sender,
                action="outreach.send",
                outcome="failed",
                link_id=message.link_id,
                customer_id=message.customer_id,
                detail=f"to {message.email}: {failure}",
            )
            return
        now = self._clock()
        with self._store.write() as session:
            session.execute(
                sa.update(OutreachMessage)
                .where(OutreachMessage.id == message.id)
                .values(status="sent", sent_at=now, detail=None)
            )
            self._audit.add(
                session,
                actor=sender,
                action="outreach.send",
                outcome="sent",
                link_id=message.link_id,
                customer_id=message.customer_id,
                detail=f"relink email to {message.email} (campaign {campaign_id[:8]})",
            )

    def _retire_token(self, token_id: str) -> None:
        now = self._clock()
        with self._store.write() as session:
            session.execute(
                sa.update(CustomerLinkToken)
                .where(CustomerLinkToken.id == token_id, CustomerLinkToken.used_at.is_(None))
                .values(used_at=now, finished_at=now, outcome="not_sent")
            )

    def _set_message(self, message_id: int, **values: object) -> None:
        with self._store.write() as session:
            session.execute(
                sa.update(OutreachMessage).where(OutreachMessage.id == message_id).values(**values)
            )

    def _finish(self, campaign_id: str, sender: Actor) -> None:
        now = self._clock()
        with self._store.write() as session:
            done = session.execute(
                sa.update(OutreachCampaign)
                .where(OutreachCampaign.id == campaign_id, OutreachCampaign.status == "sending")
                .values(status="done", finished_at=now, claimed_until=None)
            )
            if done.rowcount == 1:  # type: ignore[attr-defined]
                counts = dict(
                    session.execute(
                        sa.select(OutreachMessage.status, sa.func.count())
                        .where(OutreachMessage.campaign_id == campaign_id)
                        .group_by(OutreachMessage.status)
                    ).all()
                )
                self._audit.add(
                    session,
                    actor=sender,
                    action="outreach.finish",
                    outcome="done",
                    detail=(
                        f"campaign {campaign_id[:8]}: {counts.get('sent', 0)} sent, "
                        f"{counts.get('failed', 0)} failed, {counts.get('skipped', 0)} not sent"
                    ),
                )

    def stop(self, campaign_id: str, actor: Actor | str) -> None:
        """Stop sending: waiting emails are not sent (listed as stopped)."""
        actor = as_actor(actor, self._settings.default_role)
        require(actor, Permission.CUSTOMER_LINK)
        now = self._clock()
        with self._store.write() as session:
            stopped = session.execute(
                sa.update(OutreachCampaign)
                .where(OutreachCampaign.id == campaign_id, OutreachCampaign.status == "sending")
                .values(status="stopped", finished_at=now)
            )
            if stopped.rowcount != 1:  # type: ignore[attr-defined]
                return
            session.execute(
                sa.update(OutreachMessage)
                .where(
                    OutreachMessage.campaign_id == campaign_id,
                    OutreachMessage.status == "pending",
                )
                .values(status="skipped", detail=f"stopped by {actor.name}")
            )
            self._audit.add(
                session,
                actor=actor,
                action="outreach.stop",
                outcome="stopped",
                detail=f"campaign {campaign_id[:8]}",
            )
