"""Delivering the notification outbox, in its own thread, with retries and backoff.

A row is claimed with a conditional UPDATE (a short lease), so two processes never send the same
row at once; a process that dies mid-send leaves the row to be taken again when its lease ends.
A failed send is retried after 30 s, 1 min, 2 min, … (capped at 30 min); after ``MAX_ATTEMPTS``
the row is marked failed and stays on the Alerts page.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa

from linkdesk.alerts.channels import Channel, DeliveryFailed, Message
from linkdesk.store.engine import Store
from linkdesk.store.models import Alert, AlertNotification

__all__ = ["MAX_ATTEMPTS", "Dispatcher", "retry_delay"]

log = logging.getLogger("linkdesk.alerts")

MAX_ATTEMPTS = 8
CLAIM = timedelta(seconds=60)
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(minutes=30)
BATCH = 20


def retry_delay(attempts: int) -> timedelta:
    """Wait before the next try after ``attempts`` failed ones (1 → 30 s, 2 → 1 min, …)."""
    return min(RETRY_BASE * (2 ** min(max(attempts - 1, 0), 10)), RETRY_CAP)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        channels: dict[str, Channel],
        *,
        clock: Callable[[], datetime],
        dashboard_url: str | None = None,
        on_delivery: Callable[[str, str], None] | None = None,
    ) -> None:
        self._store = store
        self._channels = channels
        self._clock = clock
        self._dashboard_url = dashboard_url.rstrip("/") if dashboard_url else None
        self._on_delivery = on_delivery
        self.wake = threading.Event()

    def _claim(self) -> list[int]:
        now = self._clock()
        with self._store.write() as session:
            due = session.scalars(
                sa.select(AlertNotification.id)
                .where(
                    AlertNotification.status == "pending",
                    AlertNotification.next_attempt_at <= now,
                    sa.or_(
                        AlertNotification.claimed_until.is_(None),
                        AlertNotification.claimed_until < now,
                    ),
                )
                .order_by(AlertNotification.next_attempt_at, AlertNotification.id)
                .limit(BATCH)
            ).all()
            claimed = []
            for notification_id in due:
                won = session.execute(
                    sa.update(AlertNotification)
                    .where(
                        AlertNotification.id == notification_id,
                        AlertNotification.status == "pending",
                        sa.or_(
                            AlertNotification.claimed_until.is_(None),
                            AlertNotification.claimed_until < now,
                        ),
                    )
                    .values(claimed_until=now + CLAIM)
                ).rowcount  # type: ignore[attr-defined]
                if won:
                    claimed.append(notification_id)
            return claimed

    def _message(self, notification: AlertNotification, alert: Alert) -> Message:
        url = None
        if self._dashboard_url:
            url = f"{self._dashboard_url}/alerts?alert={alert.id}"
        return Message(
            kind=notification.kind,
            alert_id=alert.id,
            rule_id=alert.rule_id,
            key=alert.key,
            title=alert.title,
            status=alert.status if notification.kind != "resolved" else "resolved",
            value=alert.value,
            started_at=alert.started_at.isoformat(),
            resolved_at=alert.resolved_at.isoformat() if alert.resolved_at else None,
            url=url,
        )

    def deliver_due(self) -> int:
        """Send every due notification once; returns how many were sent."""
        sent = 0
        for notification_id in self._claim():
            with self._store.read() as session:
                notification = session.get(AlertNotification, notification_id)
                alert = session.get(Alert, notification.alert_id) if notification else None
                if notification is None or alert is None:
                    continue
                message = self._message(notification, alert)
                channel_name, attempts = notification.channel, notification.attempts
            channel = self._channels.get(channel_name)
            error: str | None = None
            if channel is None:
                error = "channel not configured"
            else:
                try:
                    channel.send(message)
                except DeliveryFailed as exc:
                    error = str(exc)[:300]
                except Exception as exc:
                    log.exception("alert channel %s failed", channel_name)
                    error = f"internal error ({type(exc).__name__})"
            now = self._clock()
            attempts += 1
            values: dict[str, object] = {"attempts": attempts, "claimed_until": None}
            if error is None:
                values |= {"status": "sent", "sent_at": now, "last_error": None}
                sent += 1
                outcome = "sent"
            elif attempts >= MAX_ATTEMPTS or channel is None:
                values |= {"status": "failed", "last_error": error}
                outcome = "failed"
            else:
                values |= {"next_attempt_at": now + retry_delay(attempts), "last_error": error}
                outcome = "retry"
            with self._store.write() as session:
                session.execute(
                    sa.update(AlertNotification)
                    .where(AlertNotification.id == notification_id)
                    .values(**values)
                )
            if self._on_delivery is not None:
                self._on_delivery(channel_name, outcome)
        return sent

    def run_forever(self, stop: threading.Event, *, poll: float = 5.0) -> None:
        """Deliver until ``stop`` is set; woken early when an evaluation queued something."""
        while not stop.is_set():
            try:
                self.deliver_due()
            except Exception as exc:
                log.exception("alert delivery round failed (%s)", type(exc).__name__)
            self.wake.wait(poll)
            self.wake.clear()
