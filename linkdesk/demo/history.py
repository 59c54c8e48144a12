"""The demo world's past: months of Connect sessions, link state changes and sync attempts.

MoneyKit has no API for a link's history, and the past cannot be played live, so a demo reset
writes it here, after discovery has stored the links the sandbox holds now. Only the past is
written: every row is dated before ``now``, and each link's last state change is the state the
sandbox reported for it a moment ago, so history and present agree. What happens from then on
(scenarios, relinks, webhooks) goes through the sandbox, the webhook receiver and the worker like
production traffic.

Staff names are obviously invented; no audit entries are written (the audit log only ever holds
what people really did in this Linkdesk, the demo reset included).

The same seed, link ids and ``now`` give the same history.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from linkdesk.health import RELINK_ERRORS
from linkdesk.store.engine import Store
from linkdesk.store.funnel_rollup import SessionCounts, add_counts, logged_step
from linkdesk.store.models import (
    ConnectEvent,
    ConnectSession,
    Institution,
    Link,
    LinkStateChange,
    SyncAttempt,
)

__all__ = ["DEMO_STAFF", "HistoryReport", "write_history"]

# Invented staff: obviously not people, so a screenshot never shows a colleague's name.
DEMO_STAFF = ("ada.demo", "ben.sample", "cleo.example", "dev.placeholder")
_BATCH = 5_000
_SECONDS_PER_DAY = 86_400.0

# Why a link broke in the past, and how often.
_PAST_ERRORS = (
    ("auth_expired", 0.55),
    ("institution_error", 0.25),
    ("invalid_credentials", 0.10),
    ("provider_error", 0.10),
)
# Connect's screens in the order a flow shows them, with typical seconds spent on each.
_SCREEN_SECONDS = {
    "Finder": (4, 30),
    "InstitutionAlert": (3, 12),
    "Credentials": (12, 70),
    "MFA": (10, 45),
    "OAuth": (15, 95),
    "Accounts": (4, 25),
    "Success": (1, 5),
    "Error": (2, 10),
}
_EXIT_ERRORS = (
    ("invalid_credentials", "The bank did not accept the username or password."),
    ("user_oauth_denied", "Access was refused on the bank's page."),
    ("institution_error", "The bank is not available right now."),
)


@dataclass(slots=True)
class HistoryReport:
    links: int = 0
    state_changes: int = 0
    sessions: int = 0
    events: int = 0
    sync_attempts: int = 0
    incidents: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Link:
    link_id: str
    customer_id: str | None
    institution_id: str
    state: str
    error_code: str | None
    created_at: datetime
    # MoneyKit's last successful refresh: a link in error broke soon after it.
    refreshed_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Incident:
    """A bad day at one bank: many of its links broke within hours of each other."""

    institution_id: str
    error: str
    at: datetime
    share: float
    label: str


def _login_kind(institution_id: str) -> str:
    # The store does not know how a bank logs in; a stable pick per bank keeps flows consistent.
    if "oauth" in institution_id:
        return "oauth"
    if "instant" in institution_id:
        return "instant"
    digit = hashlib.sha256(institution_id.encode()).digest()[0] % 10
    return "oauth" if digit < 2 else "credentials"


class _Writer:
    """Rows built in memory and inserted in large batches (executemany)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.pending: dict[type[Any], list[dict[str, Any]]] = {}
        self.counts: dict[type[Any], int] = {}
        # The funnel's rollups move with the sessions, in the transaction that inserts them.
        self._sessions_counted: list[SessionCounts] = []

    def add(self, table: type[Any], row: dict[str, Any]) -> None:
        rows = self.pending.setdefault(table, [])
        rows.append(row)
        if len(rows) >= _BATCH:
            self.flush()

    def add_session(self, row: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """A Connect session with its logged entries, counted in the funnel's rollups."""
        steps = [logged_step(e["seq"], e["type"], e["name"], e["payload"], e["at"]) for e in events]
        self._sessions_counted.append(SessionCounts.of(SimpleNamespace(**row), steps))
        self.pending.setdefault(ConnectSession, []).append(row)
        for event in events:
            self.add(ConnectEvent, event)

    def flush(self) -> None:
        # Parents before children: sessions before their events.
        order = [ConnectSession, ConnectEvent, LinkStateChange, SyncAttempt]
        with self._store.write() as session:
            for table in order:
                rows = self.pending.pop(table, [])
                if rows:
                    session.execute(sa.insert(table), rows)
                    self.counts[table] = self.counts.get(table, 0) + len(rows)
            add_counts(session, added=self._sessions_counted)
            self._sessions_counted.clear()


class _HistoryBuilder:
    def __init__(
        self,
        *,
        writer: _Writer,
        institutions: dict[str, str],
        now: datetime,
        days: int,
        seed: int,
    ) -> None:
        self._out = writer
        self._institutions = institutions
        self._now = now
        self._start = now - timedelta(days=days)
        self._seed = seed
        self._session_numbers = 0

    # -- sessions ----------------------------------------------------------------------------

    def _session_id(self, rng: random.Random) -> str:
        self._session_numbers += 1
        return f"demo_{self._session_numbers:07d}_{rng.getrandbits(40):010x}"

    def _screens(self, mode: str, kind: str, rng: random.Random) -> list[str]:
        login = {"oauth": ["OAuth"], "instant": [], "credentials": ["Credentials"]}[kind]
        if kind == "credentials" and rng.random() < 0.2:
            login.append("MFA")
        if mode == "relink":
            return [*login, "Success"]
        return ["Finder", *login, "Accounts", "Success"]

    def connect_session(
        self,
        rng: random.Random,
        *,
        mode: str,
        started_at: datetime,
        started_by: str,
        institution_id: str,
        customer_id: str | None,
        link_id: str | None,
        outcome: str,
    ) -> datetime:
        """One Connect session with its events; returns when it ended."""
        kind = _login_kind(institution_id)
        screens = self._screens(mode, kind, rng)
        if outcome != "success":
            # Dropped on a screen before Success: the login screen most of the time.
            before_success = screens[:-1] or ["Error"]
            stop = min(len(before_success), 2 if mode == "link" else 1)
            if rng.random() < 0.3:
                stop = rng.randint(1, len(before_success))
            screens = before_success[:stop]
        session_id = self._session_id(rng)
        at = started_at
        events: list[tuple[str, str, dict[str, Any], datetime]] = [
            ("event", "open", {"name": "open", "properties": {}}, at)
        ]
        name = self._institutions.get(institution_id, institution_id)
        for screen in screens:
            at += timedelta(seconds=rng.uniform(0.3, 1.5))
            properties = {"current_screen_name": screen}
            events.append(
                ("event", "change_screen", {"name": "change_screen", "properties": properties}, at)
            )
            low, high = _SCREEN_SECONDS[screen]
            at += timedelta(seconds=rng.uniform(low, high))
            if screen == "Finder":
                picked = {"institution_id": institution_id, "institution_name": name}
                events.append(
                    (
                        "event",
                        "select_institution",
                        {"name": "select_institution", "properties": picked},
                        at,
                    )
                )
            elif screen in ("Credentials", "MFA", "Accounts") and (
                outcome == "success" or screen != screens[-1]
            ):
                submitted = {"Credentials": "submit_credentials", "MFA": "submit_mfa"}.get(
                    screen, "submit_accounts"
                )
                events.append(("event", submitted, {"name": submitted, "properties": {}}, at))
        exit_error: tuple[str, str] | None = None
        if outcome == "success":
            terminal = "relink_success" if mode == "relink" else "success"
            events.append(("event", "success", {"name": "success", "properties": {}}, at))
            events.append(
                (
                    terminal,
                    terminal,
                    {"institution": {"id": institution_id, "name": name}, "link_id": link_id},
                    at,
                )
            )
        elif outcome == "exit":
            exit_error = rng.choice(_EXIT_ERRORS) if rng.random() < 0.6 else None
            error = (
                {"error_id": exit_error[0], "displayed_message": exit_error[1]}
                if exit_error
                else None
            )
            events.append(("event", "exit", {"name": "exit", "properties": {}}, at))
            events.append(("exit", "exit", {"error": error} if error else {}, at))
        finished = outcome != "pending"
        self._out.add_session(
            {
                "id": session_id,
                "mode": mode,
                "customer_id": customer_id,
                "link_id": link_id,
                "started_by": started_by,
                "started_at": started_at,
                "outcome": outcome,
                "exit_error_id": exit_error[0] if exit_error else None,
                "exit_message": (
                    (
                        f"{exit_error[1]} ({exit_error[0]})"
                        if exit_error
                        else "The customer closed Connect."
                    )
                    if outcome == "exit"
                    else None
                ),
                "exit_request_id": None,
                "failure_message": None,
                # The link's bank, or the one picked on the Finder screen.
                "institution_id": (
                    institution_id if link_id is not None or "Finder" in screens else None
                ),
                "completion_claimed_at": at if finished else None,
                "exchanged_at": at if outcome == "success" and mode == "link" else None,
                "finished_at": at if finished else None,
                "token_sha256": None,
            },
            [
                {
                    "session_id": session_id,
                    "seq": seq,
                    "type": kind_,
                    "name": event_name,
                    "payload": payload,
                    "at": event_at,
                    "recorded_at": event_at,
                }
                for seq, (kind_, event_name, payload, event_at) in enumerate(events, start=1)
            ],
        )
        return at

    # -- links -------------------------------------------------------------------------------

    def _change(
        self,
        link: _Link,
        at: datetime,
        before: tuple[str | None, str | None],
        after: tuple[str, str | None],
        source: str,
    ) -> None:
        self._out.add(
            LinkStateChange,
            {
                "link_id": link.link_id,
                "at": at,
                "from_state": before[0],
                "from_error": before[1],
                "to_state": after[0],
                "to_error": after[1],
                "source": source,
            },
        )

    def _relink(
        self, link: _Link, rng: random.Random, broke_at: datetime, until: datetime
    ) -> tuple[datetime, str]:
        """How a relink-needing break was repaired: (when, source of the change)."""
        wait = timedelta(hours=rng.lognormvariate(2.6, 1.0))  # median ~13 h, long tail
        repaired = min(broke_at + wait, until - timedelta(minutes=5))
        repaired = max(repaired, broke_at + timedelta(minutes=10))
        route = rng.random()
        if route < 0.5:
            return repaired, "webhook"  # the customer relinked in the company's app
        staff = route < 0.85
        started_by = (
            rng.choice(DEMO_STAFF) if staff else f"customer-link:{rng.getrandbits(48):012x}"
        )
        start = repaired - timedelta(minutes=rng.uniform(2, 6))
        if staff and rng.random() < 0.25:
            # A first try that failed: the customer typed the old password.
            self.connect_session(
                rng,
                mode="relink",
                started_at=start - timedelta(minutes=rng.uniform(10, 90)),
                started_by=started_by,
                institution_id=link.institution_id,
                customer_id=link.customer_id,
                link_id=link.link_id,
                outcome="exit",
            )
        ended = self.connect_session(
            rng,
            mode="relink",
            started_at=start,
            started_by=started_by,
            institution_id=link.institution_id,
            customer_id=link.customer_id,
            link_id=link.link_id,
            outcome="success",
        )
        return ended, "relink"

    def link_history(self, link: _Link, incidents: Sequence[_Incident]) -> None:
        rng = random.Random(f"{self._seed}:{link.link_id}")
        created = max(link.created_at, self._start)
        if rng.random() < 0.12:
            # Assisted onboarding: an agent linked the bank with the customer on the phone.
            self.connect_session(
                rng,
                mode="link",
                started_at=created - timedelta(minutes=rng.uniform(1, 4)),
                started_by=rng.choice(DEMO_STAFF),
                institution_id=link.institution_id,
                customer_id=link.customer_id,
                link_id=link.link_id,
                outcome="success",
            )
            first_source = "connect"
        else:
            first_source = "sync"
        self._change(link, created, (None, None), ("connected", None), first_source)

        # The present: a link in error now broke shortly after its last good sync.
        if link.state == "error" and link.error_code:
            synced = link.refreshed_at or self._now - timedelta(days=1)
            current_break = min(
                max(synced + timedelta(minutes=rng.uniform(1, 30)), created + timedelta(hours=1)),
                self._now - timedelta(minutes=1),
            )
        else:
            current_break = None
        horizon = current_break or self._now - timedelta(hours=1)

        breaks: list[tuple[datetime, str]] = []
        for incident in incidents:
            if (
                incident.institution_id == link.institution_id
                and created < incident.at < horizon
                and rng.random() < incident.share
            ):
                breaks.append(
                    (incident.at + timedelta(minutes=rng.uniform(0, 240)), incident.error)
                )
        lifetime_days = max(0.0, (horizon - created).total_seconds() / _SECONDS_PER_DAY)
        for _ in range(_poisson(rng, lifetime_days / 120)):
            at = created + timedelta(days=rng.uniform(0.5, max(0.5, lifetime_days)))
            breaks.append((at, _weighted(rng, _PAST_ERRORS)))
        breaks.sort()

        state: tuple[str, str | None] = ("connected", None)
        free_from = created + timedelta(minutes=30)
        for broke_at, error in breaks:
            if broke_at < free_from or broke_at >= horizon - timedelta(minutes=30):
                continue
            self._change(link, broke_at, state, ("error", error), "webhook")
            if error in RELINK_ERRORS:
                repaired_at, source = self._relink(link, rng, broke_at, horizon)
            else:
                # MoneyKit retries on its own: back within minutes to a day.
                repaired_at = min(
                    broke_at + timedelta(minutes=rng.uniform(20, 1_440)),
                    horizon - timedelta(minutes=5),
                )
                source = "webhook"
            self._change(link, repaired_at, ("error", error), ("connected", None), source)
            state = ("connected", None)
            free_from = repaired_at + timedelta(hours=2)

        if current_break is not None and link.error_code:
            self._change(link, current_break, state, ("error", link.error_code), "webhook")
            if link.error_code in RELINK_ERRORS and rng.random() < 0.3:
                # Someone already tried, and it did not work yet.
                self.connect_session(
                    rng,
                    mode="relink",
                    started_at=min(
                        current_break + timedelta(minutes=rng.uniform(30, 600)),
                        self._now - timedelta(minutes=2),
                    ),
                    started_by=rng.choice(DEMO_STAFF),
                    institution_id=link.institution_id,
                    customer_id=link.customer_id,
                    link_id=link.link_id,
                    outcome="exit",
                )
        self._sync_attempts(link, rng, current_break)

    def _sync_attempts(self, link: _Link, rng: random.Random, broke_at: datetime | None) -> None:
        # The worker's routine reads of the last two days, every few hours.
        at = self._now - timedelta(hours=48) + timedelta(minutes=rng.uniform(0, 240))
        while at < self._now:
            failing = broke_at is not None and at >= broke_at
            self._out.add(
                SyncAttempt,
                {
                    "link_id": link.link_id,
                    "kind": "link",
                    "at": at,
                    "outcome": "error" if failing else "ok",
                    "error": f"link in error: {link.error_code}" if failing else None,
                    "duration_ms": int(rng.uniform(60, 900)),
                    "worker": "demo-history",
                },
            )
            at += timedelta(hours=rng.uniform(3, 6))

    def abandoned_sessions(self, rng: random.Random, customers: Sequence[str]) -> None:
        """New-link sessions that never produced a link: exits and walk-aways, a few a day."""
        banks = sorted(self._institutions)
        if not banks or not customers:
            return
        day = self._start
        while day < self._now:
            for _ in range(_poisson(rng, 1.6)):
                at = day + timedelta(seconds=rng.uniform(0, _SECONDS_PER_DAY))
                if at >= self._now - timedelta(minutes=30):
                    continue
                self.connect_session(
                    rng,
                    mode="link",
                    started_at=at,
                    started_by=rng.choice(DEMO_STAFF),
                    institution_id=rng.choice(banks),
                    customer_id=rng.choice(customers),
                    link_id=None,
                    outcome="exit" if rng.random() < 0.7 else "pending",
                )
            day += timedelta(days=1)


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method is fine for the small means used here.
    limit, count, product = pow(2.718281828459045, -mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _weighted(rng: random.Random, choices: Sequence[tuple[str, float]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices], k=1)[0]


def _incidents(
    rng: random.Random, institutions: Sequence[str], now: datetime, days: int
) -> list[_Incident]:
    """Two bad days in the past, so the trend charts have a story to tell."""
    if len(institutions) < 2:
        return []
    outage_bank, rotation_bank = rng.sample(list(institutions), k=2)
    return [
        _Incident(
            outage_bank,
            "institution_error",
            now - timedelta(days=min(days - 1, 72), hours=rng.uniform(0, 12)),
            0.8,
            f"outage at {outage_bank}",
        ),
        _Incident(
            rotation_bank,
            "auth_expired",
            now - timedelta(days=min(days - 1, 26), hours=rng.uniform(0, 12)),
            0.45,
            f"credentials rotated at {rotation_bank}",
        ),
    ]


def _links(store: Store) -> Iterator[_Link]:
    stmt = sa.select(
        Link.link_id,
        Link.customer_id,
        Link.institution_id,
        Link.state,
        Link.error_code,
        sa.func.coalesce(Link.created_at, Link.discovered_at),
        Link.products_refreshed_at,
    ).order_by(Link.link_id)
    with store.read() as session:
        rows = session.execute(stmt).all()
    for link_id, customer, institution, state, error, created, synced in rows:
        yield _Link(link_id, customer, institution, state, error, created, synced)


def write_history(store: Store, *, now: datetime, days: int, seed: int) -> HistoryReport:
    """Replace the links' recorded past with ``days`` of synthetic history ending at ``now``."""
    with store.read() as session:
        institutions = dict(
            session.execute(sa.select(Institution.institution_id, Institution.name)).all()
        )
    links = list(_links(store))
    with store.write() as session:
        # Discovery recorded each link's state as "new" a moment ago; the history below replaces
        # that with how the link got there.
        session.execute(sa.delete(LinkStateChange))
    writer = _Writer(store)
    builder = _HistoryBuilder(
        writer=writer, institutions=institutions, now=now, days=days, seed=seed
    )
    rng = random.Random(f"{seed}:world")
    used = sorted({link.institution_id for link in links})
    incidents = _incidents(rng, used, now, days)
    for link in links:
        builder.link_history(link, incidents)
    customers = sorted({link.customer_id for link in links if link.customer_id})
    builder.abandoned_sessions(rng, customers)
    writer.flush()
    counts = writer.counts
    return HistoryReport(
        links=len(links),
        state_changes=counts.get(LinkStateChange, 0),
        sessions=counts.get(ConnectSession, 0),
        events=counts.get(ConnectEvent, 0),
        sync_attempts=counts.get(SyncAttempt, 0),
        incidents=[incident.label for incident in incidents],
    )
