"""The envelope of a MoneyKit webhook: the fields every event carries, parsed once at the edge.

The receiver parses a verified body with :func:`parse_envelope` before queueing it; the applier
and a staff re-apply read the same envelope back from the stored payload. A body without a usable
envelope is refused (protocol doc §6): nothing downstream has to check these fields again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "STATE_CHANGED",
    "TIMESTAMP_SLACK",
    "WebhookEnvelope",
    "parse_envelope",
    "parse_webhook_time",
]

STATE_CHANGED = "link.state_changed"
# webhook_timestamp may have whole-second precision: an event stamped within a second before a
# read may still be newer than that read, so it is re-read rather than ignored (a re-read never
# stores older state; only a clearly older event is ignored).
TIMESTAMP_SLACK = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class WebhookEnvelope:
    event: str
    idempotency_key: str
    timestamp: datetime
    link_id: str


def parse_webhook_time(value: Any) -> datetime | None:
    """``webhook_timestamp``: ISO 8601 (``Z`` or an offset; naive taken as UTC) or epoch seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _bounded_text(value: Any, limit: int) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= limit else None


def parse_envelope(payload: Any) -> WebhookEnvelope | None:
    """The envelope of a decoded body, or None when a field is missing, of the wrong type or
    implausibly long (the queue's columns are bounded)."""
    if not isinstance(payload, dict):
        return None
    event = _bounded_text(payload.get("webhook_event"), 60)
    key = _bounded_text(payload.get("webhook_idempotency_key"), 200)
    link_id = _bounded_text(payload.get("link_id"), 200)
    timestamp = parse_webhook_time(payload.get("webhook_timestamp"))
    if event is None or key is None or link_id is None or timestamp is None:
        return None
    return WebhookEnvelope(event=event, idempotency_key=key, timestamp=timestamp, link_id=link_id)
