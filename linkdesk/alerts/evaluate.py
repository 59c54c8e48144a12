"""What each rule sees now: findings from rollups and cheap indexed counts, never a scan of the
links table.

* The error-spike and needs-relink rules read the state-change rollup
  (:mod:`linkdesk.alerts.rollup`), whose cost follows the changes, not the number of links.
* The other rules count through indexes whose ranges hold only the links or rows they count
  (stuck links, the oldest due job, the oldest pending webhook, the last window's deliveries
  and sync attempts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from linkdesk.alerts.rollup import BUCKET, BankRate, StateChangeRollup
from linkdesk.health import STUCK_STATES, HealthThresholds
from linkdesk.store.engine import Store
from linkdesk.store.models import (
    AlertState,
    Link,
    SyncAttempt,
    SyncJob,
    WebhookDelivery,
    WebhookEvent,
    WorkerState,
)
from linkdesk.store.repository import insert_if_absent

__all__ = ["BUCKET", "BankRate", "Evaluator", "Finding"]


SAMPLES_STATE = "needs_relink_samples"
DISCOVERY_SUSPECT_STATE = "discovery_suspect"


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule is firing for one key ('' for app-wide rules, the bank's id for the spike)."""

    rule_id: str
    key: str
    title: str
    value: float
    detail: dict[str, Any] = field(default_factory=dict)


class Evaluator:
    def __init__(
        self, store: Store, *, clock: Callable[[], datetime], thresholds: HealthThresholds
    ) -> None:
        self._store = store
        self._clock = clock
        self._thresholds = thresholds
        self.rollup = StateChangeRollup(store, clock=clock)

    def bank_error_spike(self, rule_id: str, params: dict[str, float]) -> list[Finding]:
        minutes = int(params["window_minutes"])
        rates = self.rollup.bank_rates(
            timedelta(minutes=minutes), timedelta(hours=params["baseline_hours"])
        )
        return [
            Finding(
                rule_id,
                rate.institution_id,
                f"{rate.name}: {rate.net} links broke in {minutes} min "
                f"(baseline {rate.usual:.1f} per window)",
                float(rate.net),
                {
                    "institution": rate.institution_id,
                    "institution_name": rate.name,
                    "broke": rate.broke,
                    "recovered": rate.recovered,
                    "baseline_per_window": round(rate.usual, 2),
                    "links": {"institution": rate.institution_id},
                },
            )
            for rate in rates
            if rate.spiking(factor=params["factor"], min_links=int(params["min_links"]))
        ]

    def needs_relink(self, rule_id: str, params: dict[str, float]) -> list[Finding]:
        now = self._clock()
        count = self.rollup.relink_count()
        growth = self._growth_per_hour(count, now)
        over = count > params["max_links"]
        growing = growth is not None and growth > params["growth_per_hour"]
        if not (over or growing):
            return []
        title = f"{count} links need relink"
        if growth is not None:
            title += f" ({growth:+.0f} in the last hour)"
        return [
            Finding(
                rule_id,
                "",
                title,
                float(count),
                {"count": count, "growth_per_hour": growth, "links": {"health": "needs_relink"}},
            )
        ]

    def _growth_per_hour(self, count: int, now: datetime) -> float | None:
        """Change over about the last hour, from samples kept in ``alert_state`` (one a minute,
        written only when one is due, so most evaluations only read)."""
        stamp = now.timestamp()

        def recent(value: dict[str, Any] | None) -> list[tuple[float, int]]:
            return [
                (float(t), int(n))
                for t, n in (value or {}).get("samples", [])
                if stamp - float(t) <= 2 * 3600
            ]

        with self._store.read() as session:
            row = session.get(AlertState, SAMPLES_STATE)
            samples = recent(row.value if row is not None else None)
        if not samples or stamp - samples[-1][0] >= 60:
            with self._store.write() as session:
                insert_if_absent(
                    session,
                    AlertState,
                    {
                        "name": SAMPLES_STATE,
                        "number": 0,
                        "position": 0,
                        "value": {},
                        "updated_at": now,
                    },
                    ["name"],
                )
                stored = session.get(AlertState, SAMPLES_STATE)
                assert stored is not None
                samples = recent(stored.value)
                if not samples or stamp - samples[-1][0] >= 60:
                    samples.append((stamp, count))
                    stored.value = {"samples": samples[-150:]}
                    stored.updated_at = now
        old = [s for s in samples if stamp - s[0] >= 50 * 60]
        if not old:
            return None
        then, then_count = old[-1]
        return (count - then_count) / ((stamp - then) / 3600)

    def stuck_links(self, rule_id: str, params: dict[str, float]) -> list[Finding]:
        cutoff = self._clock() - self._thresholds.stuck_after
        with self._store.read() as session:
            count = int(
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(Link)
                    .where(
                        Link.state.in_(sorted(STUCK_STATES)),
                        sa.func.coalesce(Link.created_at, Link.discovered_at) < cutoff,
                    )
                )
                or 0
            )
        if count <= params["max_links"]:
            return []
        return [
            Finding(
                rule_id, "", f"{count} links stuck", float(count), {"links": {"health": "stuck"}}
            )
        ]

    def sync_lag(self, rule_id: str, params: dict[str, float]) -> list[Finding]:
        now = self._clock()
        with self._store.read() as session:
            oldest = session.scalar(
                sa.select(sa.func.min(SyncJob.due_at)).where(
                    SyncJob.due_at <= now,
                    sa.or_(SyncJob.claimed_until.is_(None), SyncJob.claimed_until < now),
                )
            )
        if oldest is None:
            return []
        minutes = (now - oldest).total_seconds() / 60
        if minutes <= params["max_minutes"]:
            return []
        return [
            Finding(
                rule_id,
                "",
                f"Sync is {minutes:.0f} min behind",
                round(minutes, 1),
                {"oldest_due_at": oldest.isoformat(), "links": {}},
            )
        ]

    def webhook_lag(self, rule_id: str, params: dict[str, float]) -> list[Finding]:
        now = self._clock()
        with self._store.read() as session:
            oldest = session.scalar(
                sa.select(sa.func.min(WebhookEvent.webhook_timestamp)).where(
                    WebhookEvent.status == "pending"
                )
            )
        if oldest is None:
            return []
        minutes = (now - oldest).total_seconds() / 60
        if minutes <= params["max_minutes"]:
            return []
        return [
            Finding(
                rule_id,
                "",
                f"Webhooks are {minutes:.0f} min behind",
                round(minutes, 1),
                {"oldest_pending": oldest.isoformat(), "links": {}},
            )
        ]

    def webhook_verification_failures(
        self, rule_id: str, params: dict[str, float]
    ) -> list[Finding]:
        since = self._clock() - timedelta(minutes=params["window_minutes"])
        with self._store.read() as session:
            reasons = Counter(
                dict(
                    session.execute(
                        sa.select(WebhookDelivery.reason, sa.func.count())
                        .where(
                            WebhookDelivery.received_at >= since,
                            WebhookDelivery.verdict == "rejected",
                        )
                        .group_by(WebhookDelivery.reason)
                    ).all()
                )
            )
        refused = sum(reasons.values())
        if refused < params["max_rejected"]:
            return []
        return [
            Finding(
                rule_id,
                "",
                f"{refused} webhook deliveries refused in {int(params['window_minutes'])} min",
                float(refused),
                {"reasons": {str(k): int(v) for k, v in reasons.items()}, "links": {}},
            )
        ]

    def moneykit_errors(self, rule_id: str, params: dict[str, float]) -> list[Finding]:
        since = self._clock() - timedelta(minutes=params["window_minutes"])
        with self._store.read() as session:
            outcomes = dict(
                session.execute(
                    sa.select(SyncAttempt.outcome, sa.func.count())
                    .where(SyncAttempt.at >= since)
                    .group_by(SyncAttempt.outcome)
                ).all()
            )
        total = sum(int(n) for n in outcomes.values())
        failed = int(outcomes.get("error", 0)) + int(outcomes.get("rate_limited", 0))
        if total < params["min_attempts"] or total == 0:
            return []
        percent = 100.0 * failed / total
        if percent <= params["max_percent"]:
            return []
        return [
            Finding(
                rule_id,
                "",
                f"{percent:.0f}% of MoneyKit reads failed or were rate-limited "
                f"({failed} of {total})",
                round(percent, 1),
                {
                    "errors": int(outcomes.get("error", 0)),
                    "rate_limited": int(outcomes.get("rate_limited", 0)),
                    "attempts": total,
                    "links": {},
                },
            )
        ]

    def discovery_suspect(self, rule_id: str, params: dict[str, float]) -> list[Finding]:
        with self._store.read() as session:
            row = session.get(WorkerState, DISCOVERY_SUSPECT_STATE)
            value = dict(row.value or {}) if row is not None else {}
        if not value:
            return []
        missing = value.get("missing")
        missing_n = (
            int(missing) if isinstance(missing, int) and not isinstance(missing, bool) else 0
        )
        return [
            Finding(
                rule_id,
                "",
                f"Discovery listed {value.get('listed', '?')} of {value.get('known', '?')} known "
                f"links ({missing_n} missing); none were marked deleted",
                float(missing_n),
                {"suspect": value, "links": {}},
            )
        ]

    def run(self, kind: str, rule_id: str, params: dict[str, float]) -> list[Finding]:
        check: Callable[[str, dict[str, float]], list[Finding]] = getattr(self, kind)
        return check(rule_id, params)
