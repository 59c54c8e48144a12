"""Alert rules, incidents and what staff do about them.

Every worker evaluates the rules on its own interval (:mod:`linkdesk.alerts.runner`); several
may do it at the same moment, so each decision is a conditional write that the database settles:

* fire — INSERT of the alert with ``open_key = <rule>|<key>`` unless one is open (unique
  constraint): one alert per incident, whoever sees it first;
* remind — UPDATE ``last_notified_at`` WHERE it still holds the value read: one reminder;
* resolve — UPDATE ``status`` WHERE it is still firing: one resolved message.

Each writes its outbox rows in the same transaction; the dispatcher thread sends them, so a slow
channel never holds up an evaluation or the worker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from linkdesk.alerts.evaluate import Evaluator, Finding
from linkdesk.alerts.rules import (
    CHANNEL_NAMES,
    DEFAULT_RULES,
    RULE_KINDS,
    default_params,
    validate_params,
)
from linkdesk.auth import Actor, Permission, require
from linkdesk.health import HealthThresholds
from linkdesk.services.audit import AuditLog
from linkdesk.store.engine import Store
from linkdesk.store.models import (
    Alert,
    AlertEvent,
    AlertNotification,
    AlertRule,
    AlertSilence,
)
from linkdesk.store.repository import insert_if_absent

__all__ = [
    "AlertRow",
    "AlertService",
    "EvaluationReport",
    "HistoryRow",
    "NotificationRow",
    "RuleRow",
]

log = logging.getLogger("linkdesk.alerts")

SYSTEM_ACTOR = "alerts"
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class RuleRow:
    id: str
    kind: str
    name: str
    enabled: bool
    params: dict[str, float]
    channels: list[str]
    renotify_minutes: int
    updated_at: datetime
    updated_by: str

    @property
    def description(self) -> str:
        return RULE_KINDS[self.kind].description


@dataclass(frozen=True, slots=True)
class AlertRow:
    id: int
    rule_id: str
    key: str
    status: str
    title: str
    value: float
    detail: dict[str, Any]
    started_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    silenced_until: datetime | None = None
    silence_reason: str | None = None

    @property
    def links_query(self) -> dict[str, str]:
        """Query parameters of the Links view behind the alert (health, error, institution)."""
        raw = self.detail.get("links") if isinstance(self.detail, dict) else None
        if not isinstance(raw, dict):
            return {}
        return {k: str(v) for k, v in raw.items() if k in ("health", "error", "institution") and v}


@dataclass(frozen=True, slots=True)
class HistoryRow:
    alert_id: int
    at: datetime
    actor: str
    action: str
    detail: str | None
    title: str


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: int
    alert_id: int
    channel: str
    kind: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class EvaluationReport:
    fired: int = 0
    reminded: int = 0
    resolved: int = 0
    firing: int = 0
    failed_rules: tuple[str, ...] = ()


def _rule_row(row: AlertRule) -> RuleRow:
    return RuleRow(
        id=row.id,
        kind=row.kind,
        name=row.name,
        enabled=bool(row.enabled),
        params=dict(row.params or {}),
        channels=list(row.channels or []),
        renotify_minutes=int(row.renotify_minutes),
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def _alert_row(row: Alert, silence: AlertSilence | None = None) -> AlertRow:
    return AlertRow(
        id=row.id,
        rule_id=row.rule_id,
        key=row.key,
        status=row.status,
        title=row.title,
        value=row.value,
        detail=dict(row.detail or {}),
        started_at=row.started_at,
        last_seen_at=row.last_seen_at,
        resolved_at=row.resolved_at,
        acknowledged_by=row.acknowledged_by,
        acknowledged_at=row.acknowledged_at,
        silenced_until=silence.until if silence else None,
        silence_reason=silence.reason if silence else None,
    )


class AlertService:
    def __init__(
        self,
        *,
        store: Store,
        audit: AuditLog,
        clock: Callable[[], datetime],
        thresholds: HealthThresholds,
        channels: Callable[[], set[str]] = lambda: set(CHANNEL_NAMES),
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._evaluator = Evaluator(store, clock=clock, thresholds=thresholds)
        # Names of the channels configured in settings: outbox rows are written only for these.
        self._configured = channels
        self._defaults_ensured = False

    @property
    def evaluator(self) -> Evaluator:
        return self._evaluator

    # -- rules -------------------------------------------------------------------------------

    def ensure_default_rules(self) -> None:
        """Create the default rules that do not exist yet (a fresh install, or a new kind)."""
        now = self._clock()
        with self._store.write() as session:
            for rule in DEFAULT_RULES:
                insert_if_absent(
                    session,
                    AlertRule,
                    {
                        "id": rule.id,
                        "kind": rule.kind,
                        "name": rule.name,
                        "enabled": True,
                        "params": default_params(rule.kind),
                        "channels": list(CHANNEL_NAMES),
                        "renotify_minutes": rule.renotify_minutes,
                        "updated_at": now,
                        "updated_by": "linkdesk",
                    },
                    ["id"],
                )
        self._defaults_ensured = True

    def rules(self) -> list[RuleRow]:
        if not self._defaults_ensured:
            self.ensure_default_rules()
        with self._store.read() as session:
            return [
                _rule_row(r) for r in session.scalars(sa.select(AlertRule).order_by(AlertRule.id))
            ]

    def update_rule(
        self,
        actor: Actor,
        rule_id: str,
        *,
        enabled: bool,
        params: dict[str, Any],
        channels: list[str],
        renotify_minutes: int,
        reason: str | None = None,
    ) -> RuleRow:
        """Change a rule (admins); every change is audited with its before and after."""
        require(actor, Permission.SETTINGS)
        unknown = sorted(set(channels) - set(CHANNEL_NAMES))
        if unknown:
            raise ValueError(f"unknown channel(s): {', '.join(unknown)}")
        if not 1 <= renotify_minutes <= 7 * 24 * 60:
            raise ValueError("Re-notify every (minutes): must be between 1 and 10080")
        with self._store.write() as session:
            row = session.get(AlertRule, rule_id)
            if row is None:
                raise ValueError(f"unknown rule {rule_id!r}")
            clean = validate_params(row.kind, params)
            before = {
                "enabled": row.enabled,
                "params": row.params,
                "channels": row.channels,
                "renotify_minutes": row.renotify_minutes,
            }
            after = {
                "enabled": enabled,
                "params": clean,
                "channels": sorted(channels),
                "renotify_minutes": renotify_minutes,
            }
            row.enabled = enabled
            row.params = clean
            row.channels = sorted(channels)
            row.renotify_minutes = renotify_minutes
            row.updated_at = self._clock()
            row.updated_by = actor.name[:200]
            self._audit.add(
                session,
                actor=actor,
                action="alert.rule",
                outcome="changed",
                detail=json.dumps({"rule": rule_id, "before": before, "after": after}),
                reason=reason,
            )
            session.flush()
            return _rule_row(row)

    # -- evaluation --------------------------------------------------------------------------

    def evaluate(self) -> EvaluationReport:
        """Roll up new state changes, check every enabled rule, fire, remind and resolve."""
        rules = self.rules()
        try:
            self._evaluator.rollup.roll_up()
        except Exception:
            log.exception("alert rollup failed")
        findings: dict[tuple[str, str], Finding] = {}
        evaluated: set[str] = set()
        failed: list[str] = []
        for rule in rules:
            if not rule.enabled:
                evaluated.add(rule.id)
                continue
            try:
                params = validate_params(rule.kind, rule.params)
                for finding in self._evaluator.run(rule.kind, rule.id, params):
                    findings[(finding.rule_id, finding.key)] = finding
                evaluated.add(rule.id)
            except Exception:
                # A rule that cannot be checked keeps its open alerts as they are.
                log.exception("alert rule %s could not be evaluated", rule.id)
                failed.append(rule.id)
        by_id = {rule.id: rule for rule in rules}
        fired = reminded = resolved = 0
        now = self._clock()
        with self._store.read() as session:
            open_alerts = list(session.scalars(sa.select(Alert).where(Alert.status == "firing")))
        open_by_key = {(a.rule_id, a.key): a for a in open_alerts}
        for slot, finding in findings.items():
            rule = by_id[finding.rule_id]
            alert = open_by_key.get(slot)
            if alert is None:
                fired += self._fire(rule, finding, now)
            else:
                reminded += self._refresh(rule, alert, finding, now)
        for slot, alert in open_by_key.items():
            if slot in findings or alert.rule_id not in evaluated:
                continue
            rule_or_none = by_id.get(alert.rule_id)
            why = "rule disabled" if rule_or_none and not rule_or_none.enabled else "cleared"
            resolved += self._resolve(rule_or_none, alert, now, why)
        return EvaluationReport(
            fired=fired,
            reminded=reminded,
            resolved=resolved,
            firing=len(findings),
            failed_rules=tuple(failed),
        )

    def _silence(
        self, session: Session, rule_id: str, key: str, now: datetime
    ) -> AlertSilence | None:
        return session.scalars(
            sa.select(AlertSilence)
            .where(
                AlertSilence.rule_id == rule_id,
                sa.or_(AlertSilence.key.is_(None), AlertSilence.key == key),
                AlertSilence.until > now,
            )
            .order_by(AlertSilence.until.desc())
            .limit(1)
        ).first()

    def _enqueue(
        self, session: Session, rule: RuleRow | None, alert_id: int, kind: str, now: datetime
    ) -> int:
        channels = sorted(set(rule.channels if rule else CHANNEL_NAMES) & self._configured())
        for channel in channels:
            session.add(
                AlertNotification(
                    alert_id=alert_id,
                    channel=channel,
                    kind=kind,
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
        return len(channels)

    def _fire(self, rule: RuleRow, finding: Finding, now: datetime) -> int:
        with self._store.write() as session:
            inserted = insert_if_absent(
                session,
                Alert,
                {
                    "rule_id": finding.rule_id,
                    "key": finding.key,
                    "open_key": f"{finding.rule_id}|{finding.key}"[:270],
                    "status": "firing",
                    "title": finding.title[:300],
                    "value": finding.value,
                    "detail": finding.detail,
                    "started_at": now,
                    "last_seen_at": now,
                    "last_notified_at": now,
                },
                ["open_key"],
            )
            if not inserted:
                return 0  # another process fired it first
            alert_id = session.scalar(
                sa.select(Alert.id).where(
                    Alert.open_key == f"{finding.rule_id}|{finding.key}"[:270]
                )
            )
            assert alert_id is not None
            session.add(
                AlertEvent(
                    alert_id=alert_id,
                    at=now,
                    actor=SYSTEM_ACTOR,
                    action="fired",
                    detail=finding.title,
                )
            )
            silence = self._silence(session, finding.rule_id, finding.key, now)
            if silence is None:
                sent = self._enqueue(session, rule, alert_id, "fired", now)
                if sent:
                    session.add(
                        AlertEvent(
                            alert_id=alert_id,
                            at=now,
                            actor=SYSTEM_ACTOR,
                            action="notified",
                            detail=f"fired: {sent} channel(s)",
                        )
                    )
        return 1

    def _refresh(self, rule: RuleRow, alert: Alert, finding: Finding, now: datetime) -> int:
        due = (
            alert.acknowledged_at is None
            and alert.last_notified_at is not None
            and now - alert.last_notified_at >= timedelta(minutes=rule.renotify_minutes)
        )
        changed = (alert.value, alert.title) != (finding.value, finding.title[:300])
        if not (changed or due):
            return 0  # nothing to write: most evaluations of a long incident end here
        with self._store.write() as session:
            session.execute(
                sa.update(Alert)
                .where(Alert.id == alert.id, Alert.status == "firing")
                .values(
                    last_seen_at=now,
                    value=finding.value,
                    title=finding.title[:300],
                    detail=finding.detail,
                )
            )
            if not due or self._silence(session, alert.rule_id, alert.key, now) is not None:
                return 0
            won = session.execute(
                sa.update(Alert)
                .where(
                    Alert.id == alert.id,
                    Alert.status == "firing",
                    Alert.last_notified_at == alert.last_notified_at,
                )
                .values(last_notified_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if not won:
                return 0
            sent = self._enqueue(session, rule, alert.id, "reminder", now)
            session.add(
                AlertEvent(
                    alert_id=alert.id,
                    at=now,
                    actor=SYSTEM_ACTOR,
                    action="notified",
                    detail=f"reminder: {sent} channel(s)",
                )
            )
        return 1

    def _resolve(self, rule: RuleRow | None, alert: Alert, now: datetime, why: str) -> int:
        with self._store.write() as session:
            won = session.execute(
                sa.update(Alert)
                .where(Alert.id == alert.id, Alert.status == "firing")
                .values(status="resolved", open_key=None, resolved_at=now, last_seen_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if not won:
                return 0
            session.add(
                AlertEvent(
                    alert_id=alert.id, at=now, actor=SYSTEM_ACTOR, action="resolved", detail=why
                )
            )
            if self._silence(session, alert.rule_id, alert.key, now) is None:
                self._enqueue(session, rule, alert.id, "resolved", now)
        return 1

    # -- what staff do -----------------------------------------------------------------------

    def acknowledge(self, actor: Actor, alert_id: int, *, note: str | None = None) -> None:
        """Someone is on it: no more reminders for this alert (the resolved message still goes)."""
        require(actor, Permission.ALERT_RESPOND)
        now = self._clock()
        with self._store.write() as session:
            won = session.execute(
                sa.update(Alert)
                .where(
                    Alert.id == alert_id, Alert.status == "firing", Alert.acknowledged_at.is_(None)
                )
                .values(acknowledged_by=actor.name[:200], acknowledged_at=now)
            ).rowcount  # type: ignore[attr-defined]
            if not won:
                raise ValueError("This alert is not firing unacknowledged any more.")
            session.add(
                AlertEvent(
                    alert_id=alert_id,
                    at=now,
                    actor=actor.name[:200],
                    action="acknowledged",
                    detail=note,
                )
            )
            self._audit.add(
                session,
                actor=actor,
                action="alert.acknowledge",
                outcome="success",
                detail=f"alert {alert_id}",
                reason=note,
            )

    def silence(self, actor: Actor, alert_id: int, *, minutes: int, reason: str) -> datetime:
        """No notifications for this alert's rule and key for ``minutes``; a reason is required."""
        require(actor, Permission.ALERT_RESPOND)
        reason = (reason or "").strip()[:MAX_REASON]
        if not reason:
            raise ValueError("Say why the alert is silenced.")
        if not 1 <= minutes <= 30 * 24 * 60:
            raise ValueError("Silence for between 1 minute and 30 days.")
        now = self._clock()
        until = now + timedelta(minutes=minutes)
        with self._store.write() as session:
            alert = session.get(Alert, alert_id)
            if alert is None:
                raise ValueError(f"unknown alert {alert_id}")
            session.add(
                AlertSilence(
                    rule_id=alert.rule_id,
                    key=alert.key,
                    until=until,
                    reason=reason,
                    created_by=actor.name[:200],
                    created_at=now,
                )
            )
            session.add(
                AlertEvent(
                    alert_id=alert_id,
                    at=now,
                    actor=actor.name[:200],
                    action="silenced",
                    detail=f"until {until:%Y-%m-%d %H:%M} UTC: {reason}",
                )
            )
            self._audit.add(
                session,
                actor=actor,
                action="alert.silence",
                outcome="success",
                detail=f"alert {alert_id} for {minutes} min",
                reason=reason,
            )
        return until

    # -- reading -----------------------------------------------------------------------------

    def alerts(self, *, status: str, limit: int = 100) -> list[AlertRow]:
        """Firing alerts (newest first) or resolved ones (most recently resolved first)."""
        now = self._clock()
        with self._store.read() as session:
            order = Alert.started_at.desc() if status == "firing" else Alert.resolved_at.desc()
            rows = list(
                session.scalars(
                    sa.select(Alert).where(Alert.status == status).order_by(order).limit(limit)
                )
            )
            return [_alert_row(r, self._silence(session, r.rule_id, r.key, now)) for r in rows]

    def get_alert(self, alert_id: int) -> AlertRow | None:
        with self._store.read() as session:
            row = session.get(Alert, alert_id)
            if row is None:
                return None
            return _alert_row(row, self._silence(session, row.rule_id, row.key, self._clock()))

    def history(self, *, alert_id: int | None = None, limit: int = 100) -> list[HistoryRow]:
        stmt = (
            sa.select(AlertEvent, Alert.title)
            .join(Alert, Alert.id == AlertEvent.alert_id)
            .order_by(AlertEvent.at.desc(), AlertEvent.id.desc())
            .limit(limit)
        )
        if alert_id is not None:
            stmt = stmt.where(AlertEvent.alert_id == alert_id)
        with self._store.read() as session:
            return [
                HistoryRow(e.alert_id, e.at, e.actor, e.action, e.detail, title)
                for e, title in session.execute(stmt).all()
            ]

    def notifications(
        self, *, statuses: tuple[str, ...] = ("pending", "failed"), limit: int = 100
    ) -> list[NotificationRow]:
        """Deliveries still retrying or given up (the page shows them), newest first."""
        with self._store.read() as session:
            rows = session.scalars(
                sa.select(AlertNotification)
                .where(AlertNotification.status.in_(statuses))
                .order_by(AlertNotification.created_at.desc(), AlertNotification.id.desc())
                .limit(limit)
            )
            return [
                NotificationRow(
                    n.id,
                    n.alert_id,
                    n.channel,
                    n.kind,
                    n.status,
                    n.attempts,
                    n.next_attempt_at,
                    n.last_error,
                    n.created_at,
                    n.sent_at,
                )
                for n in rows
            ]
