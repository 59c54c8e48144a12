"""Demo mode: a synthetic world in the offline sandbox, scripted scenarios, reset in one click.

The switch is the ``LINKDESK_DEMO_MODE`` setting until an admin flips it on the Demo page; from
then on the stored choice wins (every replica reads the same row). Turning it on, resetting the
world and starting a scenario each check first that MoneyKit is the offline sandbox
(:mod:`linkdesk.demo.sandbox`), so nothing in demo mode can reach the real MoneyKit.

A reset rebuilds the world the way production fills the store: the sandbox regenerates its links
from the seed, Linkdesk forgets its link data and discovers every link through the API, then the
months before today are written as synthetic history (:mod:`linkdesk.demo.history`). The audit
log is append-only and is kept: it records the reset itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from linkdesk.alerts.rollup import forget_rollup
from linkdesk.auth import Actor, Permission, require
from linkdesk.demo.history import HistoryReport, write_history
from linkdesk.demo.sandbox import (
    DemoRefused,
    SandboxControls,
    ScenarioInfo,
    ScenarioRunInfo,
    refuse_real_moneykit,
)
from linkdesk.errors import ServiceError
from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.services.audit import AuditLog
from linkdesk.services.discovery import DiscoveryService
from linkdesk.settings import Settings
from linkdesk.store.engine import Store
from linkdesk.store.health_totals import RECOUNT_MAX_AGE, HealthTotals, forget_stored_summary
from linkdesk.store.models import (
    Account,
    ConnectEvent,
    ConnectScreenDay,
    ConnectSession,
    ConnectSessionDay,
    Customer,
    CustomerLinkToken,
    Link,
    LinkCount,
    LinkStateChange,
    OutreachCampaign,
    OutreachMessage,
    RelinkLease,
    SyncAttempt,
    SyncJob,
    WebhookDelivery,
    WebhookEvent,
)
from linkdesk.store.repository import get_named_state, put_named_state

__all__ = ["DemoModeOff", "DemoService", "DemoStatus", "ResetReport"]

logger = logging.getLogger("linkdesk.demo")

SWITCH = "demo_mode"
WORLD = "demo_world"
# Children before parents; the audit log and the worker's own state are kept.
_WIPED_TABLES = (
    OutreachMessage,
    OutreachCampaign,
    ConnectEvent,
    ConnectScreenDay,
    ConnectSession,
    ConnectSessionDay,
    CustomerLinkToken,
    RelinkLease,
    WebhookEvent,
    WebhookDelivery,
    SyncJob,
    SyncAttempt,
    LinkStateChange,
    Account,
    LinkCount,
    Link,
    Customer,
)
# Reading thousands of links through the API: parallel reads against the local sandbox, whose
# rate limits are lifted for the build (they are MoneyKit's, and would make it take minutes).
_BUILD_CONCURRENCY = 4

Progress = Callable[[str, float], None]


class DemoModeOff(ServiceError):
    def __init__(self) -> None:
        super().__init__("Demo mode is off. An admin can switch it on on the Demo page.")


@dataclass(frozen=True, slots=True)
class DemoStatus:
    enabled: bool
    # Who decided: "setting" (LINKDESK_DEMO_MODE) or the admin who flipped the switch.
    decided_by: str
    decided_at: datetime | None
    links_in_store: int
    world_built_at: datetime | None
    world_built_by: str | None
    world_links: int | None
    seed: int


@dataclass(frozen=True, slots=True)
class ResetReport:
    links: int
    discovery_failed: int
    history: HistoryReport
    seconds: float

    @property
    def summary(self) -> str:
        h = self.history
        return (
            f"{self.links} links, {h.state_changes} state changes, {h.sessions} Connect sessions "
            f"({h.events} events), {h.sync_attempts} sync attempts in {self.seconds:.1f} s"
            + (
                f"; {self.discovery_failed} links could not be read"
                if self.discovery_failed
                else ""
            )
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class DemoService:
    def __init__(
        self,
        *,
        store: Store,
        client: MoneyKitClient,
        settings: Settings,
        audit: AuditLog,
        controls: Callable[[], SandboxControls],
        clock: Callable[[], datetime] | None = None,
        totals: HealthTotals | None = None,
    ) -> None:
        """``totals``: the process's shared totals, which say how many links the store holds
        (counted afresh after a reset) instead of a count of the links table on every view."""
        self._store = store
        self._totals = totals
        self._client = client
        self._settings = settings
        self._audit = audit
        self._controls_factory = controls
        self._controls: SandboxControls | None = None
        self._clock = clock or _utcnow

    # -- the switch --------------------------------------------------------------------------

    def _switch(self) -> dict[str, object] | None:
        with self._store.read() as session:
            return get_named_state(session, SWITCH)

    def is_enabled(self) -> bool:
        try:
            refuse_real_moneykit(self._settings.moneykit_base_url)
        except DemoRefused:
            return False  # whatever the setting or the switch says
        stored = self._switch()
        if stored is not None and isinstance(stored.get("enabled"), bool):
            return bool(stored["enabled"])
        return self._settings.demo_mode

    def controls(self) -> SandboxControls:
        """The sandbox's controls, after checking that MoneyKit really is the sandbox."""
        if self._controls is None:
            self._controls = self._controls_factory()  # refuses MoneyKit's own hosts
        self._controls.verify()
        return self._controls

    def status(self) -> DemoStatus:
        stored = self._switch() or {}
        if self._totals is not None:
            links = self._totals.health_summary(max_age=RECOUNT_MAX_AGE).total
        with self._store.read() as session:
            if self._totals is None:
                links = int(session.scalar(sa.select(sa.func.count()).select_from(Link)) or 0)
            world = get_named_state(session, WORLD) or {}
        decided = isinstance(stored.get("enabled"), bool)
        world_links = world.get("links")
        return DemoStatus(
            enabled=self.is_enabled(),
            decided_by=str(stored.get("by")) if decided else "setting",
            decided_at=_parse_time(stored.get("at")) if decided else None,
            links_in_store=links,
            world_built_at=_parse_time(world.get("built_at")),
            world_built_by=str(world["by"]) if world.get("by") else None,
            world_links=int(world_links) if isinstance(world_links, int) else None,
            seed=self._settings.demo_seed,
        )

    def set_enabled(self, actor: Actor, enabled: bool) -> DemoStatus:
        require(actor, Permission.DEMO_RESET)
        if enabled:
            try:
                self.controls()
            except DemoRefused as refused:
                self._audit.record(
                    actor=actor, action="demo.enable", outcome="refused", detail=str(refused)
                )
                raise
        else:
            self._stop_quietly()
        now = self._clock()
        with self._store.write() as session:
            put_named_state(
                session, SWITCH, {"enabled": enabled, "by": actor.name, "at": now.isoformat()}, now
            )
        self._audit.record(
            actor=actor, action="demo.enable" if enabled else "demo.disable", outcome="success"
        )
        return self.status()

    def _stop_quietly(self) -> None:
        try:
            self.controls().stop_scenarios()
        except ServiceError:
            logger.warning("could not stop the demo scenarios while turning demo mode off")

    def _require_on(self) -> SandboxControls:
        if not self.is_enabled():
            raise DemoModeOff()
        return self.controls()

    # -- the world ---------------------------------------------------------------------------

    def reset(self, actor: Actor, progress: Progress | None = None) -> ResetReport:
        """Rebuild the demo world from its seed (sandbox, store, history). Admins only."""
        require(actor, Permission.DEMO_RESET)
        controls = self._require_on()
        say = progress or (lambda _text, _fraction: None)
        started = time.monotonic()
        try:
            report = self._rebuild(controls, actor, say)
        except Exception as exc:
            self._audit.record(
                actor=actor,
                action="demo.reset",
                outcome="failed",
                detail=f"{type(exc).__name__}: {exc}"[:500],
            )
            raise
        seconds = time.monotonic() - started
        result = ResetReport(
            links=report[0], discovery_failed=report[1], history=report[2], seconds=seconds
        )
        now = self._clock()
        with self._store.write() as session:
            put_named_state(
                session,
                WORLD,
                {"built_at": now.isoformat(), "by": actor.name, "links": result.links},
                now,
            )
        self._audit.record(
            actor=actor, action="demo.reset", outcome="success", detail=result.summary
        )
        say("Done", 1.0)
        return result

    def _rebuild(
        self, controls: SandboxControls, actor: Actor, say: Progress
    ) -> tuple[int, int, HistoryReport]:
        settings = self._settings
        say("Stopping scenarios and resetting the sandbox", 0.02)
        controls.stop_scenarios()
        controls.reset(seed=settings.demo_seed, demo_links=settings.demo_links)
        say("Clearing the store's link data", 0.05)
        with self._store.write() as session:
            for table in _WIPED_TABLES:
                session.execute(sa.delete(table))
            forget_rollup(session)
        # The stored totals describe the old world: a dashboard starting now must not show them.
        forget_stored_summary(self._store)
        controls.set_rate_limits(False)
        try:
            discovery = DiscoveryService(
                store=self._store,
                client=self._client,
                settings=settings,
                audit=self._audit,
                clock=self._clock,
                concurrency=_BUILD_CONCURRENCY,
            )

            def discovered(done: int, total: int) -> None:
                if total and (done % 50 == 0 or done == total):
                    say(
                        f"Discovering links through the API: {done:,} of {total:,}",
                        0.05 + 0.8 * done / total,
                    )

            report = discovery.sync_all(discovered, actor=actor.name)
        finally:
            controls.set_rate_limits(True)
        say("Writing months of history", 0.87)
        history = write_history(
            self._store, now=self._clock(), days=settings.demo_history_days, seed=settings.demo_seed
        )
        if self._totals is not None:
            # The world was written around the totals' writers: count it now, not up to
            # RECOUNT_MAX_AGE later.
            self._totals.health_summary(max_age=0)
        return report.ok, report.failed, history

    # -- scenarios ---------------------------------------------------------------------------

    def scenarios(self) -> tuple[list[ScenarioInfo], list[ScenarioRunInfo]]:
        return self._require_on().scenarios()

    def start_scenario(
        self, actor: Actor, name: str, *, institution_id: str | None = None, speed: float = 1.0
    ) -> ScenarioRunInfo:
        require(actor, Permission.DEMO_SCENARIO)
        controls = self._require_on()
        try:
            run = controls.start_scenario(name, institution_id=institution_id, speed=speed)
        except ServiceError as exc:
            self._audit.record(
                actor=actor, action="demo.scenario", outcome="failed", detail=f"{name}: {exc}"
            )
            raise
        self._audit.record(
            actor=actor,
            action="demo.scenario",
            outcome="started",
            detail=f"{run.title} on {run.institution_name} ({run.run_id}, speed {run.speed:g})",
        )
        return run

    def stop_scenarios(self, actor: Actor) -> int:
        require(actor, Permission.DEMO_SCENARIO)
        stopped = self._require_on().stop_scenarios()
        self._audit.record(
            actor=actor, action="demo.scenario", outcome="stopped", detail=f"{stopped} stopped"
        )
        return stopped

    def close(self) -> None:
        if self._controls is not None:
            self._controls.close()
