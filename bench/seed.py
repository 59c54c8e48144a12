"""Bulk-seeded stores for the scale benchmarks: N links with everything around them.

``seeded_store(size, backend)`` returns the URL of a migrated store holding ``size`` links plus a
few hundred institutions (hex colours, small SVG ``data:`` logos), their customers, 1-4 accounts per
link, the state changes, Connect sessions, webhook events, sync attempts and sync jobs a store of
that size would have gathered over ~9 months, with the error mix seen in production (≈10 %
``auth_expired``, other relink and wait errors, stuck and stale links, deleted ones).

Loading goes around the ORM: SQLAlchemy Core ``executemany`` in large batches on SQLite (with the
durability PRAGMAs off during the load, restored after) and ``COPY … FROM STDIN`` on PostgreSQL,
then ``ANALYZE`` so the planner knows the new sizes.

Seeded stores are kept under ``bench/.data/`` (git-ignored), one per size and backend, with a
marker naming the seed format and the schema revision. A later run reuses them; it upgrades the
schema when a newer migration exists (indexes only, cheaper than a new seed), and seeds again when
the seed format changed, when the store is older than :data:`MAX_AGE` (health depends on the time:
links turn stale as days pass) or when ``force`` is given.

Run alone (``python bench/seed.py --sizes 10000,100000 --backends sqlite``) it prepares stores and
prints how long each seed took; ``make bench`` runs it with its defaults (10k links on SQLite) so
it stays cheap there.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import psycopg
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql as pgsql

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from linkdesk.store.engine import create_engine, migrate  # noqa: E402

DATA_DIR = REPO_ROOT / "bench" / ".data"
# Bump when the generated data changes shape: cached stores of an older format are seeded again.
SEED_FORMAT = 3
# The schema the generated rows are written for; the migrations after it run once they are loaded
# and fill what they add from them (a new column, a rollup), as they would on an installation.
LOAD_REVISION = "0011"
# Health depends on the time (stale after 48 h without fresh data); a store older than this
# would have drifted away from the intended mix.
MAX_AGE = timedelta(hours=24)
DEFAULT_PG_ADMIN_URL = os.environ.get(
    "LINKDESK_TEST_POSTGRES_URL", "postgresql+psycopg://linkdesk@localhost:55432/postgres"
)
INSTITUTION_COUNT = 300
CHUNK_LINKS = 20_000
HISTORY = timedelta(days=270)

# (state, error_code, share): the mix of link states and errors.
STATE_MIX: tuple[tuple[str, str | None, float], ...] = (
    ("connected", None, 0.77),  # of which STALE_SHARE are stale
    ("error", "auth_expired", 0.10),
    ("error", "invalid_credentials", 0.012),
    ("error", "user_input_incorrect", 0.006),
    ("error", "user_oauth_denied", 0.005),
    ("error", "user_setup_required", 0.01),
    ("error", "incomplete", 0.007),
    ("error", "institution_error", 0.025),
    ("error", "provider_error", 0.01),
    ("error", "system_error", 0.005),
    ("error", "user_error", 0.01),
    ("error", "no_accounts", 0.005),
    ("connecting", None, 0.008),
    ("awaiting_token_exchange", None, 0.004),
    ("deleted", None, 0.013),
)
STALE_SHARE = 0.06

_NAME_FIRST = (
    "First", "Pacific", "Summit", "Harbor", "Granite", "Prairie", "Liberty", "Cedar", "Union",
    "Northern", "Coastal", "Heritage", "Pioneer", "Evergreen", "Riverside", "Citizens", "Keystone",
    "Lakeside", "Frontier", "Golden", "Silver", "Metro", "Valley", "Highland", "Bay",
)  # fmt: skip
_NAME_SECOND = (
    "National", "Community", "Federal", "Savings", "Trust", "Mutual", "State", "Peoples",
    "Farmers", "Commerce", "Capital", "Security",
)  # fmt: skip
_NAME_KIND = ("Bank", "Credit Union", "Bank & Trust", "Savings Bank", "Financial")
_COUNTRIES = ("US", "US", "US", "CA", "GB")
_PROVIDERS = ("mx", "finicity", "plaid", "akoya", "direct")
_ACCOUNT_KINDS = (
    ("depository.checking", "Everyday Checking"),
    ("depository.savings", "High Yield Savings"),
    ("credit.card", "Rewards Card"),
    ("loan.mortgage", "Home Mortgage"),
    ("investment.brokerage", "Brokerage"),
)
_WEBHOOK_EVENTS = ("link.state_changed", "link.product_refresh", "transactions.updates_available")
_SYNC_OUTCOMES = (("ok", 0.9), ("error", 0.07), ("rate_limited", 0.03))


@dataclass(frozen=True, slots=True)
class SeededStore:
    url: str
    backend: str
    size: int
    seeded_now: bool
    seed_seconds: float  # of the run that seeded it (kept in the marker)
    rows: dict[str, int]
    anchor: datetime  # "now" of the seed; timestamps are spread over ~9 months before it


# -- generation ----------------------------------------------------------------------------


def _ts(moment: datetime) -> str:
    # The text SQLAlchemy's SQLite DateTime stores (naive UTC); PostgreSQL's COPY reads it too.
    return moment.isoformat(sep=" ", timespec="microseconds")


def _svg_uri(colour: str, initials: str) -> str:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
        f'<rect width="32" height="32" rx="6" fill="{colour}"/>'
        '<text x="16" y="21" font-size="13" text-anchor="middle" fill="#fff" '
        f'font-family="sans-serif">{initials}</text></svg>'
    )
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def _institutions(rng: random.Random, anchor: datetime) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    names: set[str] = set()
    while len(rows) < INSTITUTION_COUNT:
        name = f"{rng.choice(_NAME_FIRST)} {rng.choice(_NAME_SECOND)} {rng.choice(_NAME_KIND)}"
        if name in names:
            continue
        names.add(name)
        index = len(rows)
        colour = f"#{rng.randrange(0x1000000):06x}"
        dark = f"#{rng.randrange(0x1000000):06x}"
        initials = "".join(word[0] for word in name.split()[:2])
        logo = _svg_uri(colour, initials)
        slug = name.lower().replace(" & ", "-").replace(" ", "-")
        rows.append(
            (
                f"inst_{index:04d}_{slug[:20]}",
                name,
                f"{slug}.example",
                rng.choice(_COUNTRIES),
                colour,
                dark,
                logo,
                _svg_uri(dark, initials),
                logo,
                None,
                "{}",
                _ts(anchor - timedelta(days=rng.uniform(0, 30))),
                _ts(anchor - timedelta(days=rng.uniform(0, 30))),
            )
        )
    return rows


INSTITUTION_COLUMNS = (
    "institution_id", "name", "domain", "country", "color", "color_dark", "logo", "logo_dark",
    "avatar", "avatar_dark", "image_sources", "fetched_at", "updated_at",
)  # fmt: skip
CUSTOMER_COLUMNS = ("customer_id", "first_seen_at", "updated_at")
LINK_COLUMNS = (
    "link_id", "customer_id", "institution_id", "state", "error_code", "provider", "tags",
    "created_at", "last_synced_at", "products_refreshed_at", "discovered_at", "updated_at",
    "state_as_of", "last_webhook_at",
)  # fmt: skip
ACCOUNT_COLUMNS = (
    "link_id", "account_id", "name", "account_type", "mask", "currency", "balance_current",
    "balance_available", "closed", "updated_at",
)  # fmt: skip
STATE_CHANGE_COLUMNS = (
    "link_id",
    "at",
    "from_state",
    "from_error",
    "to_state",
    "to_error",
    "source",
)
SESSION_COLUMNS = (
    "id", "mode", "customer_id", "link_id", "started_by", "started_at", "outcome",
    "completion_claimed_at", "exchanged_at", "finished_at",
)  # fmt: skip
EVENT_COLUMNS = ("session_id", "seq", "type", "name", "payload", "at", "recorded_at")
# Connect's logged entries, as JSON text.
_OPEN = json.dumps({"name": "open", "properties": {}})
_SUCCESS = json.dumps({"name": "success", "properties": {}})
_SCREEN = {
    screen: json.dumps({"name": "change_screen", "properties": {"current_screen_name": screen}})
    for screen in ("Finder", "OAuth", "Credentials")
}


@functools.cache
def _picked(bank: str) -> str:
    return json.dumps({"name": "select_institution", "properties": {"institution_id": bank}})


def _login(bank: str) -> str:
    """A bank's login screen: OAuth for one bank in three (by its number), else Credentials."""
    return "OAuth" if int(bank[5:9]) % 3 == 0 else "Credentials"


def _linked(bank: str, link_id: str) -> str:
    return json.dumps({"institution": {"id": bank}, "link_id": link_id})


WEBHOOK_COLUMNS = (
    "idempotency_key", "delivery_token", "event", "link_id", "webhook_timestamp", "payload",
    "received_at", "status", "applied_at",
)  # fmt: skip
ATTEMPT_COLUMNS = ("link_id", "kind", "at", "outcome", "error", "duration_ms", "worker")
JOB_COLUMNS = (
    "id", "kind", "link_id", "due_at", "priority", "attempts", "last_run_at", "last_success_at",
    "created_at",
)  # fmt: skip


@dataclass
class _Chunk:
    links: list[tuple[Any, ...]]
    accounts: list[tuple[Any, ...]]
    state_changes: list[tuple[Any, ...]]
    sessions: list[tuple[Any, ...]]
    events: list[tuple[Any, ...]]
    webhooks: list[tuple[Any, ...]]
    attempts: list[tuple[Any, ...]]
    jobs: list[tuple[Any, ...]]


_US = 1_000_000
_HOUR = 3_600 * _US
_DAY = 24 * _HOUR


def _texts(micros: np.ndarray) -> list[str]:
    """Epoch microseconds → the store's naive-UTC timestamp text, vectorised."""
    text = np.datetime_as_string(micros.astype("datetime64[us]"), unit="us")
    return cast(list[str], np.char.replace(text, "T", " ").tolist())


def _nullable(values: list[Any], present: np.ndarray) -> list[Any]:
    return [value if keep else None for value, keep in zip(values, present.tolist(), strict=True)]


def _hex_ids(rng: np.random.Generator, count: int, nbytes: int) -> list[str]:
    blob = rng.bytes(count * nbytes).hex()
    width = 2 * nbytes
    return [blob[i : i + width] for i in range(0, count * width, width)]


def _uniform_us(rng: np.random.Generator, low: Any, high: Any, count: int) -> np.ndarray:
    return rng.uniform(low, high, count).astype(np.int64)


def _between(rng: np.random.Generator, low: int, high: np.ndarray) -> np.ndarray:
    """Uniform in ``[low, high)`` per element (``high`` is an array, each above ``low``)."""
    return low + (rng.random(len(high)) * (high - low)).astype(np.int64)


class _Generator:
    """Deterministic (seeded) rows, vectorised with NumPy and produced chunk by chunk so memory
    stays flat; one Python loop per row would make generation the slowest part of a 1M seed."""

    def __init__(self, size: int, anchor: datetime, seed: int = 7) -> None:
        self.size = size
        self.anchor = anchor
        self.anchor_us = int(anchor.timestamp() * _US)
        self.seed = seed
        self.institutions = _institutions(random.Random(seed), anchor)
        self.institution_ids = np.array([row[0] for row in self.institutions], dtype=object)
        # A few large banks hold most links, as in real life (Zipf-like weights).
        weights = 1.0 / (np.arange(len(self.institutions)) + 1.0) ** 0.9
        self.institution_weights = weights / weights.sum()
        self.customer_count = max(1, size // 2)
        shares = np.array([share for _, _, share in STATE_MIX])
        self.state_weights = shares / shares.sum()
        self.state_names = np.array([state for state, _, _ in STATE_MIX], dtype=object)
        self.error_codes = np.array([error for _, error, _ in STATE_MIX], dtype=object)

    def customers(self) -> Iterator[list[tuple[Any, ...]]]:
        rng = np.random.default_rng([self.seed, 1])
        step = CHUNK_LINKS * 4
        for start in range(0, self.customer_count, step):
            count = min(step, self.customer_count - start)
            seen = _texts(
                self.anchor_us - _uniform_us(rng, _HOUR, HISTORY.total_seconds() * _US, count)
            )
            ids = [f"cust_{index:07d}" for index in range(start, start + count)]
            yield list(zip(ids, seen, seen, strict=True))

    def chunks(self) -> Iterator[_Chunk]:
        done = 0
        number = 0
        while done < self.size:
            count = min(CHUNK_LINKS, self.size - done)
            number += 1
            yield self._chunk(np.random.default_rng([self.seed, 2, number]), count)
            done += count

    def _chunk(self, rng: np.random.Generator, n: int) -> _Chunk:
        anchor = self.anchor_us
        kind = rng.choice(len(self.state_weights), size=n, p=self.state_weights)
        states = self.state_names[kind]
        errors = self.error_codes[kind]
        connected = states == "connected"
        stale = connected & (rng.random(n) < STALE_SHARE)
        pending = (states == "connecting") | (states == "awaiting_token_exchange")
        failed = ~connected & ~pending

        created = anchor - _uniform_us(rng, _HOUR, HISTORY.total_seconds() * _US, n)
        age = anchor - created
        # Healthy: synced in the last 6 h, last change anywhere in the link's life.
        synced = anchor - _between(rng, 60 * _US, np.minimum(age, 6 * _HOUR))
        synced = np.maximum(synced, created)
        changed = created + (rng.random(n) * age).astype(np.int64)
        refreshed = synced.copy()
        # Stale: no product refresh for 3 to 60 days (always beyond the 48 h threshold).
        stale_age = _uniform_us(rng, 3 * _DAY, 60 * _DAY, n)
        created = np.where(stale, np.minimum(created, anchor - stale_age), created)
        refreshed = np.where(stale, anchor - stale_age, refreshed)
        changed = np.where(stale, anchor - stale_age, changed)
        # Stuck: still connecting/awaiting the exchange after 2 h to 30 days (stuck at 30 min,
        # so for the whole cache lifetime).
        stuck_created = anchor - _uniform_us(rng, 2 * _HOUR, 30 * _DAY, n)
        created = np.where(pending, stuck_created, created)
        age = anchor - created
        # Errors (and deletions): the change happened in the last 30 days.
        error_at = anchor - _between(rng, 600 * _US, np.minimum(age, 30 * _DAY))
        error_at = np.maximum(error_at, created)
        changed = np.where(pending, created, np.where(failed, error_at, changed))
        synced = np.where(pending, created, np.where(failed, error_at, synced))
        refreshed = np.where(
            failed, np.maximum(error_at - _uniform_us(rng, 60 * _US, _HOUR, n), created), refreshed
        )
        discovered = created + _uniform_us(rng, _US, 600 * _US, n)
        webhook_seen = rng.random(n) < 0.6

        link_ids = ["mk_" + text for text in _hex_ids(rng, n, 11)]
        customers = [f"cust_{index:07d}" for index in rng.integers(self.customer_count, size=n)]
        institutions = self.institution_ids[
            rng.choice(len(self.institution_ids), size=n, p=self.institution_weights)
        ].tolist()
        providers = [_PROVIDERS[i] for i in rng.integers(len(_PROVIDERS), size=n)]
        apps = rng.random(n) < 0.66
        tags = [
            f'["customer:{customer}", "app:{"mobile" if app else "web"}"]'
            for customer, app in zip(customers, apps.tolist(), strict=True)
        ]
        created_text = _texts(created)
        synced_text = _texts(synced)
        changed_text = _texts(changed)
        state_list = states.tolist()
        error_list = errors.tolist()
        links = list(
            zip(
                link_ids,
                customers,
                institutions,
                state_list,
                error_list,
                providers,
                tags,
                created_text,
                synced_text,
                _nullable(_texts(refreshed), ~pending),
                _texts(discovered),
                changed_text,
                changed_text,
                _nullable(changed_text, webhook_seen),
                strict=True,
            )
        )
        chunk = _Chunk(links, [], [], [], [], [], [], [])
        self._accounts(rng, chunk, link_ids, synced_text)
        self._sessions(rng, chunk, link_ids, customers, institutions, created, pending)
        self._state_changes(chunk, link_ids, created_text, changed_text, state_list, error_list)
        self._webhooks(rng, chunk, link_ids, created)
        self._attempts(rng, chunk, link_ids, created)
        due = _texts(anchor + _uniform_us(rng, -120 * _US, 1_800 * _US, n))
        chunk.jobs = [
            (f"link:{link}", "link", link, when, 0, 0, sync, sync, made)
            for link, when, sync, made in zip(link_ids, due, synced_text, created_text, strict=True)
        ]
        return chunk

    @staticmethod
    def _per_link(rng: np.random.Generator, n: int, low: int, high: int) -> np.ndarray:
        """Index of the owning link for each child row, ``low``…``high`` children per link."""
        return np.repeat(np.arange(n), rng.integers(low, high + 1, size=n))

    def _accounts(
        self, rng: np.random.Generator, chunk: _Chunk, link_ids: list[str], synced: list[str]
    ) -> None:
        owner = self._per_link(rng, len(link_ids), 1, 4)
        total = len(owner)
        starts = np.searchsorted(owner, owner, side="left")
        number = (np.arange(total) - starts).tolist()
        kinds = rng.integers(len(_ACCOUNT_KINDS), size=total).tolist()
        masks = rng.integers(10_000, size=total).tolist()
        balances = np.round(rng.uniform(-2_000, 25_000, total), 2).tolist()
        chunk.accounts = [
            (
                link_ids[o],
                f"acc_{link_ids[o][3:]}_{num}",
                _ACCOUNT_KINDS[k][1],
                _ACCOUNT_KINDS[k][0],
                f"{mask:04d}",
                "USD",
                balance,
                balance,
                0,
                synced[o],
            )
            for o, num, k, mask, balance in zip(
                owner.tolist(), number, kinds, masks, balances, strict=True
            )
        ]

    def _sessions(
        self,
        rng: np.random.Generator,
        chunk: _Chunk,
        link_ids: list[str],
        customers: list[str],
        banks: list[str],
        created: np.ndarray,
        pending: np.ndarray,
    ) -> None:
        n = len(link_ids)
        begun = created - _uniform_us(rng, 20 * _US, 300 * _US, n)
        started = _texts(begun)
        finished = _nullable(_texts(created), ~pending)
        outcome = ["pending" if p else "success" for p in pending.tolist()]
        ids = ["cs_" + sid for sid in _hex_ids(rng, n, 12)]
        chunk.sessions = [
            (sid, "link", customer, link, "support@example.com", start, out, fin, fin, fin)
            for sid, customer, link, start, out, fin in zip(
                ids, customers, link_ids, started, outcome, finished, strict=True
            )
        ]
        # What Connect logged: the Finder, the bank picked, its login screen, then the success
        # (a pending session stopped at the login). Each step a share of the session's length.
        length = created - begun
        steps = [_texts(begun + (length * share).astype(np.int64)) for share in (0.05, 0.3, 0.4)]
        ended = _texts(created)
        events = chunk.events
        for index, sid in enumerate(ids):
            finder, picked, login = steps[0][index], steps[1][index], steps[2][index]
            bank = banks[index]
            events += [
                (sid, 1, "event", "open", _OPEN, started[index], started[index]),
                (sid, 2, "event", "change_screen", _SCREEN["Finder"], finder, finder),
                (sid, 3, "event", "select_institution", _picked(bank), picked, picked),
                (sid, 4, "event", "change_screen", _SCREEN[_login(bank)], login, login),
            ]
            if not pending[index]:
                at = ended[index]
                events += [
                    (sid, 5, "event", "success", _SUCCESS, at, at),
                    (sid, 6, "success", "success", _linked(bank, link_ids[index]), at, at),
                ]

    @staticmethod
    def _state_changes(
        chunk: _Chunk,
        link_ids: list[str],
        created: list[str],
        changed: list[str],
        states: list[str],
        errors: list[str | None],
    ) -> None:
        rows: list[tuple[Any, ...]] = []
        for index, (link, state, error) in enumerate(zip(link_ids, states, errors, strict=True)):
            stuck = state in ("connecting", "awaiting_token_exchange")
            rows.append(
                (link, created[index], None, None, state if stuck else "connected", None, "connect")
            )
            if state in ("error", "deleted"):
                source = "webhook" if index % 5 < 3 else "sync"
                rows.append((link, changed[index], "connected", None, state, error, source))
        chunk.state_changes = rows

    def _webhooks(
        self, rng: np.random.Generator, chunk: _Chunk, link_ids: list[str], created: np.ndarray
    ) -> None:
        owner = self._per_link(rng, len(link_ids), 0, 3)
        total = len(owner)
        span = self.anchor_us - created[owner]
        at = created[owner] + (rng.random(total) * span).astype(np.int64)
        at_text = _texts(at)
        applied = _texts(at + 40_000)
        events = rng.integers(len(_WEBHOOK_EVENTS), size=total).tolist()
        tokens = _hex_ids(rng, total, 10)
        rows = []
        for o, token, event_index, when, done in zip(
            owner.tolist(), tokens, events, at_text, applied, strict=True
        ):
            event = _WEBHOOK_EVENTS[event_index]
            link = link_ids[o]
            payload = f'{{"event": "{event}", "link_id": "{link}"}}'
            rows.append(
                (f"idem_{token}", f"dlv_{token}", event, link, when, payload, when, "applied", done)
            )
        chunk.webhooks = rows

    def _attempts(
        self, rng: np.random.Generator, chunk: _Chunk, link_ids: list[str], created: np.ndarray
    ) -> None:
        owner = self._per_link(rng, len(link_ids), 1, 3)
        total = len(owner)
        at = np.maximum(self.anchor_us - _uniform_us(rng, 0, 40 * _DAY, total), created[owner])
        outcomes = [name for name, _ in _SYNC_OUTCOMES]
        shares = np.array([share for _, share in _SYNC_OUTCOMES])
        picked = rng.choice(len(outcomes), size=total, p=shares / shares.sum()).tolist()
        durations = rng.integers(80, 901, size=total).tolist()
        chunk.attempts = [
            (
                link_ids[o],
                "link",
                when,
                outcomes[p],
                "503 from MoneyKit" if outcomes[p] == "error" else None,
                duration,
                "worker-1",
            )
            for o, when, p, duration in zip(
                owner.tolist(), _texts(at), picked, durations, strict=True
            )
        ]


# -- loading -------------------------------------------------------------------------------


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


# The tables the seed fills; their secondary indexes are dropped for the load and built again
# afterwards (one sort per index instead of a million random B-tree inserts).
BULK_TABLES = (
    "customers", "links", "accounts", "link_state_changes", "connect_sessions", "connect_events",
    "webhook_events", "sync_attempts", "sync_jobs",
)  # fmt: skip


class _SqliteLoader:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.connection = self.engine.connect()
        # Bulk-load settings: no fsync, no foreign-key checks, a large page cache. The
        # generator's rows are consistent by construction. PRAGMA foreign_keys is ignored inside
        # a transaction, so these go to the driver connection before SQLAlchemy begins one.
        self._pragmas(
            "PRAGMA synchronous=OFF",
            "PRAGMA foreign_keys=OFF",
            "PRAGMA cache_size=-400000",
            "PRAGMA temp_store=MEMORY",
        )
        # Indexes that are not constraints (those have no SQL text in sqlite_master).
        tables = ", ".join(f"'{table}'" for table in BULK_TABLES)
        self.indexes: list[tuple[str, str]] = [
            (str(name), str(ddl))
            for name, ddl in self.connection.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({tables})"
            ).all()
        ]
        for name, _ in self.indexes:
            self.connection.exec_driver_sql(f'DROP INDEX "{name}"')
        self.connection.commit()

    def _pragmas(self, *statements: str) -> None:
        driver = self.connection.connection.driver_connection
        assert driver is not None
        for statement in statements:
            driver.execute(statement)

    def load(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.connection.exec_driver_sql(_insert_sql(table, columns), rows)

    def commit(self) -> None:
        self.connection.commit()

    def finish(self) -> None:
        self.connection.commit()
        for _, ddl in self.indexes:
            self.connection.exec_driver_sql(ddl)
        self.connection.commit()
        self._pragmas(
            "ANALYZE",
            "PRAGMA wal_checkpoint(TRUNCATE)",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA foreign_keys=ON",
        )
        self.connection.close()
        self.engine.dispose()


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg's conninfo URL."""
    parsed = sa.make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class _PostgresLoader:
    def __init__(self, url: str) -> None:
        self.connection = psycopg.connect(libpq_url(url))
        # Indexes that back no constraint (primary keys and unique constraints stay).
        self.indexes: list[tuple[str, str]] = [
            (str(name), str(ddl))
            for name, ddl in self.connection.execute(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i "
                "WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s) "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                "WHERE c.conindid = (quote_ident(i.schemaname) || '.' || "
                "quote_ident(i.indexname))::regclass)",
                (list(BULK_TABLES),),
            ).fetchall()
        ]
        for name, _ in self.indexes:
            self.connection.execute(pgsql.SQL("DROP INDEX {}").format(pgsql.Identifier(name)))
        self.connection.commit()

    def load(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        statement = pgsql.SQL("COPY {} ({}) FROM STDIN").format(
            pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
        )
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def commit(self) -> None:
        self.connection.commit()

    def finish(self) -> None:
        self.connection.commit()
        self.connection.execute("SET maintenance_work_mem = '512MB'")
        for _, ddl in self.indexes:
            self.connection.execute(ddl.encode())
        self.connection.commit()
        # VACUUM sets the visibility map, so counts can be answered from the indexes alone.
        self.connection.autocommit = True
        self.connection.execute("VACUUM ANALYZE")
        self.connection.close()


def _load(loader: _SqliteLoader | _PostgresLoader, generator: _Generator) -> dict[str, int]:
    counts: dict[str, int] = {}

    def put(table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        loader.load(table, columns, rows)
        counts[table] = counts.get(table, 0) + len(rows)

    put("institutions", INSTITUTION_COLUMNS, generator.institutions)
    for batch in generator.customers():
        put("customers", CUSTOMER_COLUMNS, batch)
    loader.commit()
    for chunk in generator.chunks():
        put("links", LINK_COLUMNS, chunk.links)
        put("accounts", ACCOUNT_COLUMNS, chunk.accounts)
        put("link_state_changes", STATE_CHANGE_COLUMNS, chunk.state_changes)
        put("connect_sessions", SESSION_COLUMNS, chunk.sessions)
        put("connect_events", EVENT_COLUMNS, chunk.events)
        put("webhook_events", WEBHOOK_COLUMNS, chunk.webhooks)
        put("sync_attempts", ATTEMPT_COLUMNS, chunk.attempts)
        put("sync_jobs", JOB_COLUMNS, chunk.jobs)
        loader.commit()
    loader.finish()
    return counts


# -- the cache -----------------------------------------------------------------------------


def schema_head() -> str:
    config = Config()
    config.set_main_option("script_location", str(REPO_ROOT / "linkdesk" / "store" / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    if head is None:
        raise RuntimeError("no Alembic head revision")
    return head


def postgres_url(size: int, admin_url: str = DEFAULT_PG_ADMIN_URL) -> str:
    database = f"linkdesk_bench_{size}"
    return sa.make_url(admin_url).set(database=database).render_as_string(hide_password=False)


def _marker_path(backend: str, size: int) -> Path:
    return DATA_DIR / f"{backend}-{size}.json"


def _sqlite_url(size: int) -> str:
    return f"sqlite:///{DATA_DIR / f'links-{size}.db'}"


def _read_marker(backend: str, size: int) -> dict[str, Any] | None:
    path = _marker_path(backend, size)
    if not path.exists():
        return None
    try:
        marker: dict[str, Any] = json.loads(path.read_text())
    except ValueError:
        return None
    return marker


def _links_in(url: str) -> int | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.exec_driver_sql("SELECT count(*) FROM links").scalar_one())
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def _usable(marker: dict[str, Any] | None, url: str, size: int, now: datetime) -> bool:
    if marker is None or marker.get("format") != SEED_FORMAT or marker.get("url") != url:
        return False
    anchor = datetime.fromisoformat(marker["anchor"])
    if now - anchor > MAX_AGE:
        return False
    # The PostgreSQL server of the tests is throwaway: the database may be gone.
    return _links_in(url) == size


def _drop_and_create_postgres(url: str, admin_url: str) -> None:
    database = sa.make_url(url).database
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as admin:
        admin.execute(
            pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                pgsql.Identifier(str(database))
            )
        )
        admin.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(str(database))))


def seeded_store(
    size: int,
    backend: str = "sqlite",
    *,
    force: bool = False,
    pg_admin_url: str = DEFAULT_PG_ADMIN_URL,
    log: bool = True,
) -> SeededStore:
    """A store with ``size`` links on ``backend`` (``sqlite``/``postgresql``), seeded if needed."""
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unknown backend {backend!r}")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    url = _sqlite_url(size) if backend == "sqlite" else postgres_url(size, pg_admin_url)
    now = datetime.now(UTC)
    head = schema_head()
    marker = _read_marker(backend, size)
    if not force and _usable(marker, url, size, now):
        assert marker is not None
        if marker.get("revision") != head:
            # A newer migration (indexes): upgrade the seeded store instead of seeding it again.
            migrate(url)
            _analyze(url)
            marker["revision"] = head
            _marker_path(backend, size).write_text(json.dumps(marker, indent=2))
        return SeededStore(
            url=url,
            backend=backend,
            size=size,
            seeded_now=False,
            seed_seconds=float(marker["seconds"]),
            rows={str(k): int(v) for k, v in marker["rows"].items()},
            anchor=datetime.fromisoformat(marker["anchor"]),
        )

    if log:
        print(f"seeding {size:,} links on {backend} …", flush=True)
    _marker_path(backend, size).unlink(missing_ok=True)
    started = time.perf_counter()
    if backend == "sqlite":
        path = DATA_DIR / f"links-{size}.db"
        for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)
    else:
        _drop_and_create_postgres(url, pg_admin_url)
    migrate(url, LOAD_REVISION)
    generator = _Generator(size, now)
    loader: _SqliteLoader | _PostgresLoader = (
        _SqliteLoader(url) if backend == "sqlite" else _PostgresLoader(url)
    )
    rows = _load(loader, generator)
    # The migrations after the load fill what they add from the rows, as on an installation.
    migrate(url)
    _analyze(url)
    seconds = time.perf_counter() - started
    marker = {
        "format": SEED_FORMAT,
        "revision": head,
        "url": url,
        "anchor": now.isoformat(),
        "seconds": round(seconds, 1),
        "rows": rows,
    }
    _marker_path(backend, size).write_text(json.dumps(marker, indent=2))
    if log:
        total = sum(rows.values())
        print(
            f"seeded {size:,} links on {backend} in {seconds:.1f} s "
            f"({total:,} rows, {total / seconds:,.0f} rows/s)",
            flush=True,
        )
    return SeededStore(url, backend, size, True, seconds, rows, now)


def _analyze(url: str) -> None:
    """Statistics for the planner; on PostgreSQL also the visibility map a migration's updates
    cleared (counts answered from indexes alone need it)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM ANALYZE"
                )
            else:
                connection.exec_driver_sql("ANALYZE")
                connection.commit()
    finally:
        engine.dispose()


def parse_sizes(text: str) -> list[int]:
    """``10k,100k,1M`` or ``10000,100000`` → sizes."""
    sizes = []
    for part in text.split(","):
        token = part.strip().lower().replace("_", "")
        factor = 1
        if token.endswith("k"):
            factor, token = 1_000, token[:-1]
        elif token.endswith("m"):
            factor, token = 1_000_000, token[:-1]
        sizes.append(int(float(token) * factor))
    return sizes


def parse_backends(text: str) -> list[str]:
    backends = [part.strip() for part in text.split(",") if part.strip()]
    for backend in backends:
        if backend not in ("sqlite", "postgresql"):
            raise argparse.ArgumentTypeError(f"unknown backend {backend!r}")
    return backends


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000], help="e.g. 10k,100k,1M")
    parser.add_argument("--backends", type=parse_backends, default=["sqlite"])
    parser.add_argument("--force", action="store_true", help="seed again even when cached")
    args = parser.parse_args(list(argv) if argv is not None else None)
    for backend in args.backends:
        for size in args.sizes:
            store = seeded_store(size, backend, force=args.force)
            state = "seeded now" if store.seeded_now else "cached"
            print(
                f"{backend} {size:,} links: {state}, seed took {store.seed_seconds:.1f} s, "
                f"rows {store.rows}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
