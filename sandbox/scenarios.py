"""Scripted scenarios a presenter starts from Linkdesk's demo page: MoneyKit misbehaving on cue.

A scenario is a timetable of steps on the sandbox clock. Each step changes links through the
sandbox's public break/repair API (``break_link`` / ``repair_link``), the same path as everything
else, so every change sends its signed ``link.state_changed`` webhook, and the client finds out
exactly as it would from the real MoneyKit: through webhooks and its own reads, never through a
back door.

Steps fire when :meth:`ScenarioDirector.tick` runs and the clock has reached them. The sandbox app
ticks twice a second in the background, and on every ``/_sandbox/scenarios`` request, so tests
can move the clock (``/_sandbox/time``) instead of sleeping.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sandbox.institutions import Institution
from sandbox.models import Link


class ScenarioHost(Protocol):
    """What a scenario may touch: the sandbox's public break/repair API and read-only catalogue.

    A protocol rather than an import of ``sandbox.state``, so the two modules do not import each
    other and scenarios cannot reach behind the state's back.
    """

    clock: Callable[[], datetime]

    @property
    def links(self) -> dict[str, Link]: ...

    @property
    def institutions(self) -> dict[str, Institution]: ...

    @property
    def seed(self) -> int: ...

    def break_link(self, link: Link, error_code: str) -> None: ...

    def repair_link(self, link: Link) -> None: ...

    def mark_institution_down(self, institution_id: str, down: bool) -> None: ...


__all__ = ["SCENARIOS", "ScenarioDirector", "ScenarioError", "ScenarioRun", "ScenarioSpec"]


class ScenarioError(ValueError):
    """The scenario cannot start (unknown name, no link to play it on, bad speed)."""


@dataclass(frozen=True, slots=True)
class Step:
    at_s: float  # seconds after the start, at speed 1
    label: str
    action: Callable[[ScenarioHost, ScenarioRun], int]  # returns links changed


@dataclass(slots=True)
class ScenarioRun:
    run_id: str
    name: str
    title: str
    institution_id: str
    institution_name: str
    started_at: datetime
    speed: float
    steps: list[Step]
    status: str = "running"  # running | finished | stopped
    done: int = 0
    links_changed: int = 0
    last_step: str = ""
    # Links the scenario broke and has not repaired yet, oldest first.
    broken: list[str] = field(default_factory=list)
    # Links the scenario will break, in the order the waves take them.
    targets: list[str] = field(default_factory=list)
    broken_total: int = 0
    finished_at: datetime | None = None

    def due_at(self, step: Step) -> datetime:
        return self.started_at + timedelta(seconds=step.at_s / self.speed)

    def describe(self) -> dict[str, Any]:
        total_s = self.steps[-1].at_s / self.speed if self.steps else 0.0
        return {
            "run_id": self.run_id,
            "name": self.name,
            "title": self.title,
            "institution_id": self.institution_id,
            "institution_name": self.institution_name,
            "status": self.status,
            "speed": self.speed,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "finished_at": (
                self.finished_at.isoformat().replace("+00:00", "Z") if self.finished_at else None
            ),
            "duration_s": round(total_s, 1),
            "steps_done": self.done,
            "steps_total": len(self.steps),
            "last_step": self.last_step,
            "links_changed": self.links_changed,
            "links_still_broken": len(self.broken),
        }


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    name: str
    title: str
    description: str
    # Which institutions the scenario may be played on, and which one it picks by default.
    eligible: Callable[[ScenarioHost, str], bool]
    build: Callable[[], list[Step]]
    # Share of the bank's connected links the scenario breaks.
    affected_share: float


# -------------------------------------------------------------------------------- helpers
def _connected_at(state: ScenarioHost, institution_id: str) -> list[Link]:
    return [
        link
        for link in state.links.values()
        if link.institution_id == institution_id
        and link.state == "connected"
        and link.deleted_at is None
    ]


def _break_wave(error_code: str, waves_left: int) -> Callable[[ScenarioHost, ScenarioRun], int]:
    """Break an equal part of the targets still standing: 1/``waves_left`` of them."""

    def action(state: ScenarioHost, run: ScenarioRun) -> int:
        count = -(-len(run.targets) // waves_left)  # ceiling: the last wave takes the rest
        taken, run.targets = run.targets[:count], run.targets[count:]
        changed = 0
        for link_id in taken:
            link = state.links.get(link_id)
            if link is None or link.deleted_at is not None or link.state != "connected":
                continue
            state.break_link(link, error_code)
            run.broken.append(link_id)
            run.broken_total += 1
            changed += 1
        return changed

    return action


def _repair_wave(portion: float) -> Callable[[ScenarioHost, ScenarioRun], int]:
    """Repair ``portion`` of all the links the scenario broke (1 repairs whatever is left)."""

    def action(state: ScenarioHost, run: ScenarioRun) -> int:
        count = len(run.broken) if portion >= 1 else max(1, round(run.broken_total * portion))
        repaired, run.broken = run.broken[:count], run.broken[count:]
        changed = 0
        for link_id in repaired:
            link = state.links.get(link_id)
            if link is None or link.deleted_at is not None or link.state != "error":
                continue  # someone relinked it already (staff or the customer)
            state.repair_link(link)
            changed += 1
        return changed

    return action


def _institution_down(down: bool) -> Callable[[ScenarioHost, ScenarioRun], int]:
    def action(state: ScenarioHost, run: ScenarioRun) -> int:
        # Only new Connect attempts see the outage alert here; the waves move the links.
        state.mark_institution_down(run.institution_id, down)
        return 0

    return action


FAIL = "institution_error"
EXPIRED = "auth_expired"


def _oauth_outage_steps() -> list[Step]:
    # A wave of institution errors over 40 s, an outage held for 30 s, recovery over 30 s.
    steps = [Step(0, "The bank's OAuth login stops answering", _institution_down(True))]
    steps += [
        Step(5 + 7 * i, f"Wave {i + 1} of 6: links fail to refresh", _break_wave(FAIL, 6 - i))
        for i in range(6)
    ]
    steps += [
        Step(80 + 8 * i, f"Recovery {i + 1} of 4: links refresh again", _repair_wave(portion))
        for i, portion in enumerate((0.25, 0.25, 0.25, 1.0))
    ]
    steps.append(Step(110, "The bank's OAuth login is back", _institution_down(False)))
    return steps


def _credentials_rotated_steps() -> list[Step]:
    # The bank makes everyone change passwords: 40 % of its links expire in waves; customers then
    # come back and relink over the next minutes, but about a third never do (support's work).
    steps = [
        Step(5 * i, f"Wave {i + 1} of 5: logins expire", _break_wave(EXPIRED, 5 - i))
        for i in range(5)
    ]
    steps += [
        Step(45 + 15 * i, f"Customers relink from the app ({i + 1} of 5)", _repair_wave(0.13))
        for i in range(5)
    ]
    return steps


def _is_oauth(state: ScenarioHost, institution_id: str) -> bool:
    return state.institutions[institution_id].auth == "oauth"


def _uses_credentials(state: ScenarioHost, institution_id: str) -> bool:
    return state.institutions[institution_id].auth == "credentials"


SCENARIOS: dict[str, ScenarioSpec] = {
    spec.name: spec
    for spec in (
        ScenarioSpec(
            name="oauth_outage",
            title="A large bank's OAuth outage",
            description=(
                "The bank's OAuth login stops answering: its links fail in waves with "
                "institution_error and new Connect attempts see an outage alert; after about a "
                "minute the bank recovers and the links refresh again."
            ),
            eligible=_is_oauth,
            build=_oauth_outage_steps,
            affected_share=1.0,
        ),
        ScenarioSpec(
            name="credentials_rotated",
            title="Credentials rotated",
            description=(
                "The bank makes its customers change their passwords: a wave of auth_expired, then "
                "most customers relink from the app over the next minutes; the rest need support."
            ),
            eligible=_uses_credentials,
            build=_credentials_rotated_steps,
            affected_share=0.4,
        ),
    )
}


class ScenarioDirector:
    """Runs scenarios on one sandbox state. Not thread-safe: called from the event loop only."""

    def __init__(self, state: ScenarioHost) -> None:
        self._state = state
        self._runs: list[ScenarioRun] = []
        self._ids = itertools.count(1)

    def catalogue(self) -> list[dict[str, Any]]:
        listed = []
        for spec in SCENARIOS.values():
            bank = self.default_institution(spec.name)
            listed.append(
                {
                    "name": spec.name,
                    "title": spec.title,
                    "description": spec.description,
                    "duration_s": spec.build()[-1].at_s,
                    "default_institution_id": bank,
                    "default_institution_name": (
                        self._state.institutions[bank].name if bank is not None else None
                    ),
                }
            )
        return listed

    def default_institution(self, name: str) -> str | None:
        """The eligible bank with the most connected links (a *large* bank), if any."""
        spec = SCENARIOS[name]
        sizes = {
            iid: len(_connected_at(self._state, iid))
            for iid in self._state.institutions
            if spec.eligible(self._state, iid)
        }
        best = max(sizes.items(), key=lambda item: (item[1], item[0]), default=None)
        return best[0] if best and best[1] > 0 else None

    def start(self, name: str, *, institution_id: str | None, speed: float) -> ScenarioRun:
        spec = SCENARIOS.get(name)
        if spec is None:
            raise ScenarioError(f"No scenario named {name!r}; known: {', '.join(SCENARIOS)}.")
        if not 0.1 <= speed <= 1000:
            raise ScenarioError("speed must be between 0.1 and 1000.")
        chosen = institution_id or self.default_institution(name)
        if chosen is None or chosen not in self._state.institutions:
            raise ScenarioError("No institution with connected links to play this scenario on.")
        if not spec.eligible(self._state, chosen):
            raise ScenarioError(f"{chosen} cannot play {name!r} (wrong login method).")
        if any(r.status == "running" and r.institution_id == chosen for r in self._runs):
            raise ScenarioError("A scenario is already running on this institution.")
        targets = [link.link_id for link in _connected_at(self._state, chosen)]
        if not targets:
            raise ScenarioError("This institution has no connected link to break.")
        rng = random.Random(f"{self._state.seed}:{name}:{chosen}")
        rng.shuffle(targets)
        targets = targets[: max(1, round(len(targets) * spec.affected_share))]
        run = ScenarioRun(
            run_id=f"scn_{next(self._ids)}",
            name=name,
            title=spec.title,
            institution_id=chosen,
            institution_name=self._state.institutions[chosen].name,
            started_at=self._state.clock(),
            speed=speed,
            steps=spec.build(),
            targets=targets,
        )
        self._runs.append(run)
        self.tick()
        return run

    def tick(self) -> int:
        """Apply every step that is due; returns how many steps ran."""
        now = self._state.clock()
        ran = 0
        for run in self._runs:
            while run.status == "running" and run.done < len(run.steps):
                step = run.steps[run.done]
                if run.due_at(step) > now:
                    break
                run.links_changed += step.action(self._state, run)
                run.last_step = step.label
                run.done += 1
                ran += 1
            if run.status == "running" and run.done == len(run.steps):
                run.status = "finished"
                run.finished_at = now
        return ran

    def stop_all(self) -> int:
        """Stop running scenarios where they are (their broken links stay broken)."""
        stopped = 0
        for run in self._runs:
            if run.status == "running":
                run.status = "stopped"
                run.finished_at = self._state.clock()
                stopped += 1
        return stopped

    def forget(self) -> None:
        """Drop every run (a sandbox reset rebuilds the world they played on)."""
        self._runs = []

    def runs(self) -> list[dict[str, Any]]:
        return [run.describe() for run in reversed(self._runs)]
