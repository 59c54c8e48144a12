"""What became of each outreach email: a campaign's progress, each message's stage (sent →
opened → finished, or expired) and the funnel, read for the pages and the customer timeline."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from linkdesk.store.engine import Store
from linkdesk.store.models import (
    CustomerLinkToken,
    Institution,
    OutreachCampaign,
    OutreachMessage,
)

__all__ = [
    "CampaignProgress",
    "MessageRow",
    "OutreachFunnel",
    "OutreachTracking",
    "Tracking",
]


@dataclass(frozen=True, slots=True)
class CampaignProgress:
    id: str
    status: str
    description: str
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    total: int
    sent: int
    failed: int
    skipped: int
    waiting: int
    sender_alive: bool

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def finished(self) -> bool:
        return self.status != "sending"


@dataclass(frozen=True, slots=True)
class MessageRow:
    link_id: str
    customer_id: str | None
    email: str | None
    status: str
    detail: str | None
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class Tracking:
    """Where one emailed relink link stands: sent → opened → finished (or expired)."""

    campaign_id: str
    link_id: str
    customer_id: str | None
    institution_name: str | None
    email: str | None
    status: str  # the message: sent | failed | skipped | pending | sending
    detail: str | None
    created_at: datetime
    sent_at: datetime | None
    opened_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    expires_at: datetime | None
    stage: str  # not sent | sent | opened | finished | expired | ended (<outcome>)


@dataclass(frozen=True, slots=True)
class OutreachFunnel:
    emailed: int
    opened: int
    finished: int
    expired: int
    failed: int
    not_emailed: int


class OutreachTracking:
    """Read side of outreach; :class:`~linkdesk.services.outreach.OutreachService` builds on it."""

    _store: Store
    _clock: Callable[[], datetime]

    def progress(self, campaign_id: str) -> CampaignProgress | None:
        now = self._clock()
        with self._store.read() as session:
            campaign = session.get(OutreachCampaign, campaign_id)
            if campaign is None:
                return None
            counts = dict(
                session.execute(
                    sa.select(OutreachMessage.status, sa.func.count())
                    .where(OutreachMessage.campaign_id == campaign_id)
                    .group_by(OutreachMessage.status)
                ).all()
            )
            alive = campaign.claimed_until is not None and campaign.claimed_until > now
            return CampaignProgress(
                id=campaign.id,
                status=campaign.status,
                description=campaign.description,
                created_by=campaign.created_by,
                created_at=campaign.created_at,
                finished_at=campaign.finished_at,
                total=sum(counts.values()),
                sent=counts.get("sent", 0),
                failed=counts.get("failed", 0),
                skipped=counts.get("skipped", 0),
                waiting=counts.get("pending", 0) + counts.get("sending", 0),
                sender_alive=alive,
            )

    def recent_campaigns(self, limit: int = 10) -> list[CampaignProgress]:
        with self._store.read() as session:
            ids = session.scalars(
                sa.select(OutreachCampaign.id)
                .order_by(OutreachCampaign.created_at.desc())
                .limit(limit)
            ).all()
        return [p for i in ids if (p := self.progress(i)) is not None]

    def messages(
        self, campaign_id: str, *, statuses: tuple[str, ...] | None = None
    ) -> list[MessageRow]:
        stmt = sa.select(OutreachMessage).where(OutreachMessage.campaign_id == campaign_id)
        if statuses:
            stmt = stmt.where(OutreachMessage.status.in_(statuses))
        with self._store.read() as session:
            return [
                MessageRow(m.link_id, m.customer_id, m.email, m.status, m.detail, m.sent_at)
                for m in session.scalars(stmt.order_by(OutreachMessage.id))
            ]

    def _tracking(self, where: list[sa.ColumnElement[bool]], limit: int) -> list[Tracking]:
        now = self._clock()
        stmt = (
            sa.select(OutreachMessage, CustomerLinkToken, Institution.name)
            .outerjoin(CustomerLinkToken, CustomerLinkToken.id == OutreachMessage.token_id)
            .outerjoin(Institution, Institution.institution_id == OutreachMessage.institution_id)
            .where(*where)
            .order_by(OutreachMessage.created_at.desc(), OutreachMessage.id.desc())
            .limit(limit)
        )
        with self._store.read() as session:
            rows = session.execute(stmt).all()
        return [_tracking(message, token, name, now) for message, token, name in rows]

    def customer_tracking(self, customer_id: str, limit: int = 50) -> list[Tracking]:
        """Every relink email of one customer, newest first, with where it stands."""
        return self._tracking([OutreachMessage.customer_id == customer_id], limit)

    def link_stages(self, link_ids: Iterable[str]) -> dict[str, str]:
        """The stage of each link's latest relink email (for a column in a list of links)."""
        wanted = sorted(set(link_ids))
        if not wanted:
            return {}
        stages: dict[str, str] = {}
        for row in self._tracking([OutreachMessage.link_id.in_(wanted)], limit=len(wanted) * 5):
            stages.setdefault(row.link_id, row.stage)
        return stages

    def funnel(
        self, since: datetime, until: datetime, institution_id: str | None = None
    ) -> OutreachFunnel:
        """Relink emails of campaigns started in [since, until): emailed → opened → finished."""
        where: list[sa.ColumnElement[bool]] = [
            OutreachMessage.created_at >= since,
            OutreachMessage.created_at < until,
        ]
        if institution_id:
            where.append(OutreachMessage.institution_id == institution_id)
        rows = self._tracking(where, limit=1_000_000)
        emailed = [r for r in rows if r.status == "sent"]
        return OutreachFunnel(
            emailed=len(emailed),
            opened=sum(1 for r in emailed if r.opened_at is not None),
            finished=sum(1 for r in emailed if r.stage == "finished"),
            expired=sum(1 for r in emailed if r.stage == "expired"),
            failed=sum(1 for r in rows if r.status == "failed"),
            not_emailed=sum(1 for r in rows if r.status == "skipped"),
        )


def _stage(message: OutreachMessage, token: CustomerLinkToken | None, now: datetime) -> str:
    if message.status != "sent":
        return "not sent"
    if token is None:  # its relink link was removed (a demo reset): only the sending is known
        return "sent"
    if token.finished_at is not None:
        return "finished" if token.outcome == "success" else f"ended ({token.outcome})"
    if token.used_at is None and token.expires_at <= now:
        return "expired"
    if token.opened_at is not None or token.used_at is not None:
        return "opened"
    return "sent"


def _tracking(
    message: OutreachMessage, token: CustomerLinkToken | None, name: str | None, now: datetime
) -> Tracking:
    return Tracking(
        campaign_id=message.campaign_id,
        link_id=message.link_id,
        customer_id=message.customer_id,
        institution_name=name,
        email=message.email,
        status=message.status,
        detail=message.detail,
        created_at=message.created_at,
        sent_at=message.sent_at,
        opened_at=token.opened_at if token else None,
        finished_at=token.finished_at if token else None,
        outcome=token.outcome if token else None,
        expires_at=token.expires_at if token else None,
        stage=_stage(message, token, now),
    )
