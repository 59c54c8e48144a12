"""The Webhooks screen: MoneyKit's deliveries as received, newest first, with their verdicts,
and one delivery's payload when its signature was verified."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from linkdesk.store.aggregates import bounded
from linkdesk.store.engine import Store
from linkdesk.store.models import WebhookDelivery


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    id: int
    received_at: datetime
    verdict: str
    reason: str | None
    event: str | None
    link_id: str | None
    attempt: int | None
    delivery_token: str | None
    event_timestamp: datetime | None
    payload: dict[str, Any] | None  # only for verified (accepted) deliveries


class DeliveryReads:
    """Webhook deliveries as the receiver recorded them."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def recent(
        self,
        limit: int = 50,
        *,
        before_id: int | None = None,
        verdict: str | None = None,
        reason: str | None = None,
        link_id: str | None = None,
    ) -> list[DeliveryDetail]:
        """Newest first, paged by id (ids grow with arrival). Payloads are left out here."""
        stmt = sa.select(
            WebhookDelivery.id,
            WebhookDelivery.received_at,
            WebhookDelivery.verdict,
            WebhookDelivery.reason,
            WebhookDelivery.event,
            WebhookDelivery.link_id,
            WebhookDelivery.attempt,
            WebhookDelivery.delivery_token,
            WebhookDelivery.event_timestamp,
        )
        if before_id is not None:
            stmt = stmt.where(WebhookDelivery.id < before_id)
        if verdict:
            stmt = stmt.where(WebhookDelivery.verdict == verdict)
        if reason:
            stmt = stmt.where(WebhookDelivery.reason == reason)
        if link_id:
            stmt = stmt.where(WebhookDelivery.link_id == link_id)
        stmt = stmt.order_by(WebhookDelivery.id.desc()).limit(bounded(limit))
        with self._store.read() as session:
            return [DeliveryDetail(*row, payload=None) for row in session.execute(stmt).all()]

    def get(self, delivery_id: int) -> DeliveryDetail | None:
        """One delivery; its payload only when its signature was verified."""
        with self._store.read() as session:
            d = session.get(WebhookDelivery, delivery_id)
            if d is None:
                return None
            verified = d.verdict == "accepted" and isinstance(d.payload, dict)
            return DeliveryDetail(
                id=d.id,
                received_at=d.received_at,
                verdict=d.verdict,
                reason=d.reason,
                event=d.event,
                link_id=d.link_id,
                attempt=d.attempt,
                delivery_token=d.delivery_token,
                event_timestamp=d.event_timestamp,
                payload=dict(d.payload or {}) if verified else None,
            )

    def counts_by_verdict(self) -> dict[str, int]:
        stmt = sa.select(WebhookDelivery.verdict, sa.func.count()).group_by(WebhookDelivery.verdict)
        with self._store.read() as session:
            return {str(v): int(n) for v, n in session.execute(stmt).all()}

    def reasons(self) -> list[str]:
        stmt = (
            sa.select(WebhookDelivery.reason)
            .where(WebhookDelivery.reason.is_not(None))
            .distinct()
            .order_by(WebhookDelivery.reason)
            .limit(100)
        )
        with self._store.read() as session:
            return [str(r) for r in session.scalars(stmt).all()]
