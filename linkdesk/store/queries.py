"""Read side for the pages: plain SQL over the store, returning frozen rows.

Lists use keyset pagination: a page asks for rows strictly after the last row of the previous page
in the chosen order, so page 1000 costs the same as page 1 and nothing loads a whole table.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from linkdesk.health import (
    RELINK_ERRORS,
    STUCK_STATES,
    WAIT_ERRORS,
    Health,
    HealthThresholds,
    assess_link,
    health_case,
    health_condition,
    health_condition_at,
    link_health,
)
from linkdesk.store.cursor import InvalidCursor, decode_cursor, encode_cursor
from linkdesk.store.engine import Store
from linkdesk.store.models import (
    Account,
    AuditEntry,
    ConnectEvent,
    ConnectSession,
    CustomerLinkToken,
    Institution,
    Link,
    LinkStateChange,
    RelinkLease,
    SyncAttempt,
    SyncJob,
    WebhookEvent,
    WorkerState,
)
from linkdesk.store.plans import (
    Plan,
    choose_plan,
    filter_share,
    keep_to_filter_index,
    keep_to_page_order,
    unindexed,
    without_filter_indexes,
)
from linkdesk.store.repository import delete_named_state, get_named_state, put_named_state
from linkdesk.store.shared import SharedResult
from linkdesk.validation import safe_hex_color, safe_logo_url

__all__ = [
    "RELINK_ERRORS",
    "STUCK_STATES",
    "WAIT_ERRORS",
    "AccountRow",
    "AuditRow",
    "CustomerLinkRow",
    "CustomerRow",
    "Health",
    "HealthSummary",
    "HealthThresholds",
    "InstitutionRow",
    "InvalidCursor",
    "LinkDetail",
    "LinkFilters",
    "LinkPage",
    "LinkQueries",
    "LinkRow",
    "LinkSort",
    "RelinkInProgress",
    "SessionRow",
    "StateChangeRow",
    "SyncAttemptRow",
    "WorkerStatus",
    "health_condition",
    "link_health",
]

MAX_PAGE_SIZE = 1000


class LinkSort(enum.StrEnum):
    UPDATED_DESC = "updated_desc"
    UPDATED_ASC = "updated_asc"
    LINK_ID = "link_id"
    INSTITUTION = "institution"
    CUSTOMER = "customer"
    STATE = "state"


@dataclass(frozen=True, slots=True)
class LinkFilters:
    state: str | None = None
    error_code: str | None = None
    health: Health | None = None
    institution_id: str | None = None
    customer: str | None = None  # customer id prefix
    search: str | None = None  # link id prefix, or part of the institution name
    include_deleted: bool = True


@dataclass(frozen=True, slots=True)
class LinkRow:
    link_id: str
    customer_id: str | None
    institution_id: str
    institution_name: str
    institution_color: str | None
    institution_color_dark: str | None
    institution_logo: str | None
    institution_logo_dark: str | None
    institution_avatar: str | None
    institution_avatar_dark: str | None
    state: str
    error_code: str | None
    health: Health
    provider: str | None
    tags: list[str]
    created_at: datetime | None
    last_synced_at: datetime | None
    products_refreshed_at: datetime | None
    updated_at: datetime
    # Why the row has its health: an error code, stuck_<state>, stale… (a PLAYBOOKS key when one
    # exists, see linkdesk.health.playbook_for).
    health_reason: str = ""
    last_webhook_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LinkPage:
    rows: list[LinkRow]
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True, slots=True)
class HealthSummary:
    """How many links have each verdict and each error code, at ``computed_at``."""

    counts: dict[Health, int]
    errors: dict[str, int]  # links per error code (any state)
    computed_at: datetime
    # Links per (verdict, state, error code or ""): what the Links page plans its reads with.
    groups: dict[tuple[Health, str, str], int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def from_groups(
        cls, groups: dict[tuple[Health, str, str], int], computed_at: datetime
    ) -> HealthSummary:
        counts = dict.fromkeys(Health, 0)
        errors: dict[str, int] = {}
        for (health, _state, error_code), n in groups.items():
            counts[health] += n
            if error_code:
                errors[error_code] = errors.get(error_code, 0) + n
        return cls(counts=counts, errors=errors, computed_at=computed_at, groups=dict(groups))

    def to_record(self, thresholds: HealthThresholds) -> dict[str, Any]:
        """As JSON, with the thresholds that decided the verdicts (see :meth:`from_record`)."""
        return {
            "computed_at": self.computed_at.isoformat(),
            "thresholds": _thresholds_record(thresholds),
            "groups": [[h.value, state, error, n] for (h, state, error), n in self.groups.items()],
        }

    @classmethod
    def from_record(cls, record: Any, thresholds: HealthThresholds) -> HealthSummary | None:
        """The summary of :meth:`to_record`; None when it was counted with other thresholds
        (another release's settings) or is not one (an older format, a hand-edited row)."""
        try:
            if record["thresholds"] != _thresholds_record(thresholds):
                return None
            computed_at = datetime.fromisoformat(record["computed_at"])
            if computed_at.tzinfo is None:
                return None
            groups: dict[tuple[Health, str, str], int] = {}
            for verdict, state, error, n in record["groups"]:
                if not (isinstance(state, str) and isinstance(error, str)):
                    return None
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    return None
                groups[(Health(verdict), state, error)] = n
        except (KeyError, TypeError, ValueError):
            return None
        return cls.from_groups(groups, computed_at)


def _thresholds_record(thresholds: HealthThresholds) -> list[float]:
    return [thresholds.stuck_after.total_seconds(), thresholds.stale_after.total_seconds()]


@dataclass(frozen=True, slots=True)
class AccountRow:
    account_id: str
    name: str
    account_type: str | None
    mask: str | None
    currency: str | None
    balance_current: float | None
    balance_available: float | None
    closed: bool | None


@dataclass(frozen=True, slots=True)
class StateChangeRow:
    at: datetime
    from_state: str | None
    from_error: str | None
    to_state: str
    to_error: str | None
    source: str


@dataclass(frozen=True, slots=True)
class SessionRow:
    session_id: str
    mode: str
    customer_id: str | None
    link_id: str | None
    started_by: str
    started_at: datetime
    outcome: str
    exit_error_id: str | None
    exit_message: str | None
    exit_request_id: str | None
    failure_message: str | None
    exchanged_at: datetime | None
    finished_at: datetime | None
    event_count: int


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    link_id: str | None
    customer_id: str | None
    outcome: str
    detail: str | None
    role: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RelinkInProgress:
    """Someone (a staff member, or a customer through a relink link) is relinking this link."""

    link_id: str
    holder: str
    since: datetime
    expires_at: datetime
    session_id: str


@dataclass(frozen=True, slots=True)
class SyncAttemptRow:
    at: datetime
    link_id: str | None
    kind: str
    outcome: str
    error: str | None
    duration_ms: int
    worker: str | None


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """Progress and lag of the reconciliation worker, for the dashboard."""

    now: datetime
    last_run_at: datetime | None
    last_run_by: str | None
    paused: bool
    jobs_total: int
    jobs_due: int
    jobs_claimed: int
    oldest_due_at: datetime | None
    links_synced_last_hour: int
    errors_last_hour: int
    rate_limited_last_hour: int
    last_error: str | None
    last_discovery_at: datetime | None
    webhooks_pending: int
    # {} or None: the last listing was complete; else {"at", "listed", "known", "missing"}.
    discovery_suspect: dict[str, Any] | None = None

    @property
    def lag(self) -> timedelta:
        """How long the most overdue job has been waiting (zero when nothing is due)."""
        if self.oldest_due_at is None:
            return timedelta(0)
        return max(self.now - self.oldest_due_at, timedelta(0))


@dataclass(frozen=True, slots=True)
class CustomerLinkRow:
    id: str
    link_id: str
    customer_id: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class InstitutionRow:
    institution_id: str
    name: str
    country: str | None
    domain: str | None
    color: str | None
    color_dark: str | None
    logo: str | None
    logo_dark: str | None
    avatar: str | None
    avatar_dark: str | None
    link_count: int


@dataclass(frozen=True, slots=True)
class CustomerRow:
    customer_id: str
    link_count: int
    needs_relink: int


@dataclass(frozen=True, slots=True)
class LinkDetail:
    row: LinkRow
    accounts: list[AccountRow] = field(default_factory=list)
    state_changes: list[StateChangeRow] = field(default_factory=list)
    sessions: list[SessionRow] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    relink_in_progress: RelinkInProgress | None = None
    sync_attempts: list[SyncAttemptRow] = field(default_factory=list)


# -- keyset machinery ----------------------------------------------------------------------

_ASC, _DESC = "asc", "desc"
_Expr = ColumnElement[Any] | QueryableAttribute[Any]


def customer_sort_key() -> ColumnElement[str]:
    # The '' is written into the SQL, not bound: a database uses an index on an expression only
    # when the query spells the same expression (see the ix_links_*_sort indexes).
    return sa.func.coalesce(Link.customer_id, sa.literal_column("''", sa.String))


def error_sort_key() -> ColumnElement[str]:
    return sa.func.coalesce(Link.error_code, sa.literal_column("''", sa.String))


def _sort_keys(sort: LinkSort) -> list[tuple[_Expr, str, bool]]:
    """(expression, direction, is_datetime) for each sort key; link_id always ends it."""
    customer = customer_sort_key()
    error = error_sort_key()
    keys: dict[LinkSort, list[tuple[_Expr, str, bool]]] = {
        LinkSort.UPDATED_DESC: [(Link.updated_at, _DESC, True), (Link.link_id, _DESC, False)],
        LinkSort.UPDATED_ASC: [(Link.updated_at, _ASC, True), (Link.link_id, _ASC, False)],
        LinkSort.LINK_ID: [(Link.link_id, _ASC, False)],
        LinkSort.INSTITUTION: [(Institution.name, _ASC, False), (Link.link_id, _ASC, False)],
        LinkSort.CUSTOMER: [(customer, _ASC, False), (Link.link_id, _ASC, False)],
        LinkSort.STATE: [
            (Link.state, _ASC, False),
            (error, _ASC, False),
            (Link.link_id, _ASC, False),
        ],
    }
    return keys[sort]


def _after_condition(
    keys: Sequence[tuple[_Expr, str, bool]], values: Sequence[Any]
) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order given by ``keys`` (a lexicographic compare).

    When every key runs in one direction (every sort here does) this is a row-value comparison,
    which both databases answer with an index seek, so page 1000 costs what page 1 does. Sort
    keys are never NULL (nullable columns are sorted through coalesce).
    """
    directions = {direction for _, direction, _ in keys}
    if len(directions) == 1 and len(keys) > 1:
        columns = sa.tuple_(*(expr for expr, _, _ in keys))
        cursor = sa.tuple_(
            *(
                sa.literal(value, type_=expr.type)
                for (expr, _, _), value in zip(keys, values, strict=True)
            )
        )
        return columns > cursor if directions == {_ASC} else columns < cursor
    clauses: list[ColumnElement[bool]] = []
    for i, (expr, direction, _) in enumerate(keys):
        equal_prefix = [keys[j][0] == values[j] for j in range(i)]
        beyond = expr > values[i] if direction == _ASC else expr < values[i]
        clauses.append(sa.and_(*equal_prefix, beyond))
    return sa.or_(*clauses)


def _encode_cursor(sort: LinkSort, values: Sequence[Any]) -> str:
    encoded = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return encode_cursor({"s": sort.value, "k": encoded})


def _decode_cursor(cursor: str, sort: LinkSort) -> list[Any]:
    keys = _sort_keys(sort)
    data = decode_cursor(cursor)
    if not isinstance(data, dict) or data.get("s") != sort.value:
        raise InvalidCursor("cursor belongs to another sort order")
    raw_values = data.get("k")
    if not isinstance(raw_values, list) or len(raw_values) != len(keys):
        raise InvalidCursor("cursor has the wrong shape")
    values: list[Any] = []
    for (_, _, is_datetime), value in zip(keys, raw_values, strict=True):
        if not isinstance(value, str):
            raise InvalidCursor("cursor has the wrong shape")
        try:
            values.append(datetime.fromisoformat(value) if is_datetime else value)
        except ValueError as exc:
            raise InvalidCursor("cursor has the wrong shape") from exc
    return values


def _prefix_range(column: _Expr, prefix: str) -> ColumnElement[bool]:
    # A range instead of LIKE 'p%': SQLite's LIKE is case-insensitive and cannot use the index.
    return sa.and_(column >= prefix, column < prefix + "\U0010ffff")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _utcnow() -> datetime:
    return datetime.now(UTC)


# Shares of links per verdict, state and error code older than this are recounted (in the
# background) before a page's plan is chosen with them.
_PLAN_COUNTS_MAX_AGE = 600.0
# A bank-name search whose banks hold at least this share of the links is listed by reading the
# links in the page's order (see LinkQueries._where).
_WALK_IN_ORDER_SHARE = 0.01
_INSTITUTION_COUNTS_MAX_AGE = 600.0
# A process that has just started shows the last summary any process counted, when it is at
# most this old, while it counts again (see linkdesk.store.shared); an older one is not shown.
SUMMARY_RECALL_MAX_AGE = 3600.0
SUMMARY_STATE_NAME = "health_summary"


def forget_stored_summary(store: Store) -> None:
    """Drop the stored health summary, so that the next process to start counts before it shows
    one: after a bulk load or a restore, the stored counts describe a store that is gone."""
    with store.write() as session:
        delete_named_state(session, SUMMARY_STATE_NAME)


class _StoredSummary:
    """The last health summary any process counted: one ``worker_state`` row."""

    def __init__(
        self, store: Store, thresholds: HealthThresholds, wall: Callable[[], float] = time.time
    ) -> None:
        # ``wall``: seconds since the epoch, the one clock processes share for the row's age.
        self._store, self._thresholds, self._wall = store, thresholds, wall

    def load(self) -> tuple[HealthSummary, float] | None:
        with self._store.read() as session:
            record = get_named_state(session, SUMMARY_STATE_NAME)
        summary = HealthSummary.from_record(record, self._thresholds) if record else None
        saved_at = record.get("saved_at") if record else None
        if summary is None or not isinstance(saved_at, int | float) or isinstance(saved_at, bool):
            return None
        # Its age in real time: the verdict clock (computed_at) may be set apart, as in tests.
        return summary, self._wall() - saved_at

    def save(self, value: HealthSummary) -> None:
        record = value.to_record(self._thresholds) | {"saved_at": self._wall()}
        with self._store.write() as session:
            put_named_state(session, SUMMARY_STATE_NAME, record, _utcnow())


class LinkQueries:
    """Read side. ``clock`` and ``thresholds`` decide the time-dependent verdicts (stuck, stale)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        thresholds: HealthThresholds | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``monotonic`` and ``wall`` measure how old a shared count is (in this process, and
        across processes through the store); tests step them instead of sleeping."""
        self._store = store
        self._clock = clock or _utcnow
        self._thresholds = thresholds or HealthThresholds()
        # Institution colours and logos as validated for the last row that carried them: a page
        # of links repeats the same few institutions, and checking a data: URI character by
        # character for every row cost more than the query itself. Keyed by institution, holding
        # the raw values too, so a changed logo is checked again (a few hundred entries at most).
        self._images: dict[str, tuple[tuple[str | None, ...], tuple[str | None, ...]]] = {}
        self._shared_summary = SharedResult(
            self._compute_health_summary,
            remembered=_StoredSummary(store, self._thresholds, wall),
            recall_max_age=SUMMARY_RECALL_MAX_AGE,
            monotonic=monotonic,
        )
        self._shared_worker_status = SharedResult(self._compute_worker_status, monotonic=monotonic)
        self._shared_institution_names = SharedResult(
            self._compute_institution_names, monotonic=monotonic
        )
        # Only to choose a plan (see _where): minutes-old counts are good enough.
        self._shared_institution_counts = SharedResult(
            self._compute_institution_counts, monotonic=monotonic
        )

    @property
    def thresholds(self) -> HealthThresholds:
        return self._thresholds

    # -- links -------------------------------------------------------------------------------

    def _where(
        self, filters: LinkFilters, now: datetime, *, listing: bool = False
    ) -> list[ColumnElement[bool]]:
        """The filters as SQL. ``listing``: for a sorted page (see the bank-name search)."""
        where: list[ColumnElement[bool]] = []
        if filters.state:
            where.append(Link.state == filters.state)
        if filters.error_code:
            where.append(Link.error_code == filters.error_code)
        if filters.health is not None:
            where.append(health_condition_at(Health(filters.health), now, self._thresholds))
        if filters.institution_id:
            where.append(Link.institution_id == filters.institution_id)
        if filters.customer:
            where.append(_prefix_range(Link.customer_id, filters.customer.strip()))
        if not filters.include_deleted:
            where.append(Link.state != "deleted")
        search = (filters.search or "").strip()
        if search:
            # Institutions are few: find the matching ones first, so the links are searched by
            # two indexed conditions (link id range, institution ids) instead of a join.
            institution_ids = self._institutions_named(search)
            by_id = _prefix_range(Link.link_id, search)
            institution: _Expr = Link.institution_id
            if listing and self._share_of_links(institution_ids) >= _WALK_IN_ORDER_SHARE:
                # Banks holding many links: reading the links in the page's order and keeping
                # the matches finds a page after a few hundred rows, whereas the index on
                # institution_id would collect (and sort) every matching link first, which at
                # a million links is 100x slower. `|| ''` keeps that index out of the plan.
                institution = Link.institution_id + sa.literal_column("''", sa.String)
            where.append(
                sa.or_(by_id, institution.in_(institution_ids)) if institution_ids else by_id
            )
        return where

    def _share_of_links(self, institution_ids: list[str]) -> float:
        if not institution_ids:
            return 0.0
        # Until the counts are known (a first computation reads every link) the index plan is
        # used: never the slowest choice by much, and nobody waits for the counts.
        counts = self._shared_institution_counts.get_if_ready(_INSTITUTION_COUNTS_MAX_AGE)
        if counts is None:
            return 0.0
        total = sum(counts.values())
        return sum(counts.get(i, 0) for i in institution_ids) / total if total else 0.0

    def _compute_institution_counts(self) -> dict[str, int]:
        stmt = sa.select(Link.institution_id, sa.func.count()).group_by(Link.institution_id)
        with self._store.read() as session:
            return {str(iid): int(n) for iid, n in session.execute(stmt).all()}

    def _institutions_named(self, text: str) -> list[str]:
        pattern = f"%{_escape_like(text.lower())}%"
        stmt = sa.select(Institution.institution_id).where(
            sa.func.lower(Institution.name).like(pattern, escape="\\")
        )
        with self._store.read() as session:
            return list(session.scalars(stmt).all())

    def _institution_images(self, institution: Any) -> tuple[str | None, ...]:
        raw = (
            institution.color,
            institution.color_dark,
            institution.logo,
            institution.logo_dark,
            institution.avatar,
            institution.avatar_dark,
        )
        known = self._images.get(institution.institution_id)
        if known is not None and known[0] == raw:
            return known[1]
        checked = (
            safe_hex_color(raw[0]),
            safe_hex_color(raw[1]),
            *(safe_logo_url(value) for value in raw[2:]),
        )
        self._images[institution.institution_id] = (raw, checked)
        return checked

    def _row(self, link: Any, institution: Any, now: datetime) -> LinkRow:
        """``link`` and ``institution``: ORM objects, or rows with the same attribute names."""
        verdict = assess_link(link, now=now, thresholds=self._thresholds)
        color, color_dark, logo, logo_dark, avatar, avatar_dark = self._institution_images(
            institution
        )
        return LinkRow(
            link_id=link.link_id,
            customer_id=link.customer_id,
            institution_id=link.institution_id,
            institution_name=institution.name,
            institution_color=color,
            institution_color_dark=color_dark,
            institution_logo=logo,
            institution_logo_dark=logo_dark,
            institution_avatar=avatar,
            institution_avatar_dark=avatar_dark,
            state=link.state,
            error_code=link.error_code,
            health=verdict.health,
            provider=link.provider,
            tags=list(link.tags or []),
            created_at=link.created_at,
            last_synced_at=link.last_synced_at,
            products_refreshed_at=link.products_refreshed_at,
            updated_at=link.updated_at,
            health_reason=verdict.reason,
            last_webhook_at=link.last_webhook_at,
        )

    def list_links(
        self,
        filters: LinkFilters | None = None,
        *,
        limit: int = 50,
        after: str | None = None,
        sort: LinkSort | str = LinkSort.UPDATED_DESC,
    ) -> LinkPage:
        """One page of links; pass the returned ``next_cursor`` as ``after`` for the next one."""
        filters = filters or LinkFilters()
        sort = LinkSort(sort)
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        cursor = _decode_cursor(after, sort) if after else None
        now = self._clock()
        if _read_by_group(filters, sort):
            results = self._list_by_group(filters, sort, now, limit, cursor)
        else:
            results = self._list_in_one_read(filters, sort, now, limit, cursor)
        rows = [self._row(link, inst, now) for link, inst in results[:limit]]
        next_cursor = None
        if len(results) > limit:
            last_link, last_inst = results[limit - 1]
            keys = range(len(_sort_keys(sort)))
            values = [_key_value(sort, i, last_link, last_inst) for i in keys]
            next_cursor = _encode_cursor(sort, values)
        return LinkPage(rows=rows, next_cursor=next_cursor)

    def _list_in_one_read(
        self,
        filters: LinkFilters,
        sort: LinkSort,
        now: datetime,
        limit: int,
        cursor: list[Any] | None,
    ) -> list[tuple[Any, _ListedInstitution]]:
        keys = _sort_keys(sort)
        # Sorted by bank name, the plan walks the institutions in name order and reads each
        # one's links through the institution index, which must then stay usable.
        where = self._where(filters, now, listing=sort is not LinkSort.INSTITUTION)
        plan = self._plan(filters, sort, limit)
        if plan is Plan.WALK and self._store.dialect == "sqlite":
            where = [without_filter_indexes(condition) for condition in where]
        elif plan is Plan.COLLECT:
            # Sorting on hidden keys keeps the sort's index out: the matches come through the
            # filter's index. Only their keys are sorted; the page's rows are read afterwards.
            keys = [(unindexed(expr), direction, is_dt) for expr, direction, is_dt in keys]
        if cursor is not None:
            where.append(_after_condition(keys, cursor))
        order = [expr.asc() if d == _ASC else expr.desc() for expr, d, _ in keys]
        if plan is Plan.COLLECT:
            page_ids = sa.select(Link.link_id).where(*where).order_by(*order).limit(limit + 1)
            if sort is LinkSort.INSTITUTION:
                # Joined from the links' side only, so the filter's index still leads.
                page_ids = page_ids.join(
                    Institution, Institution.institution_id == unindexed(Link.institution_id)
                )
            chosen = page_ids.subquery("page_ids")
            where = [Link.link_id == chosen.c.link_id]
            order = [expr.asc() if d == _ASC else expr.desc() for expr, d, _ in _sort_keys(sort)]
        # Plain columns rather than ORM entities: building identity-mapped objects (and decoding
        # the institutions' JSON we do not show) was most of a page's cost.
        stmt = (
            sa.select(*_LIST_LINK_COLUMNS, *_LIST_INSTITUTION_COLUMNS)
            .join(Institution, Institution.institution_id == Link.institution_id)
            .where(*where)
            .order_by(*order)
            .limit(limit + 1)
        )
        with self._store.read() as session:
            if plan is Plan.WALK:
                keep_to_page_order(session, self._store.dialect)
            elif plan is Plan.COLLECT:
                keep_to_filter_index(session, self._store.dialect)
            return [_split_list_row(row) for row in session.execute(stmt).all()]

    def _plan(self, filters: LinkFilters, sort: LinkSort, limit: int) -> Plan | None:
        """Walk or collect (see linkdesk.store.plans); None leaves the choice to the database.

        Decided from the shared health summary as it is (minutes old is precise enough); until
        there is one, the database decides and nobody waits for the count.
        """
        if filters.search or filters.customer:
            return None  # a customer prefix is rare; a search has its own choice (see _where)
        summary = self._shared_summary.get_if_ready(_PLAN_COUNTS_MAX_AGE)
        if summary is None:
            return None
        health = Health(filters.health) if filters.health is not None else None
        share = filter_share(
            summary.groups,
            health=health,
            state=filters.state,
            error_code=filters.error_code,
            include_deleted=filters.include_deleted,
        )
        if filters.institution_id:
            share *= self._share_of_links([filters.institution_id])
        return choose_plan(
            share=share,
            links=summary.total,
            page_size=limit,
            health=health,
            update_order=sort in (LinkSort.UPDATED_DESC, LinkSort.UPDATED_ASC),
        )

    def _list_by_group(
        self,
        filters: LinkFilters,
        sort: LinkSort,
        now: datetime,
        limit: int,
        cursor: list[Any] | None,
    ) -> list[tuple[Any, _ListedInstitution]]:
        """A page read one (state, error code) group at a time (see :func:`_read_by_group`).

        Each group is one range of an index on (state, error code, sort key), so reading a
        group's matches in the page's order stops at the page's end. Sorted by state the groups
        follow each other; sorted by update time each group gives its first page and the pages
        are merged. Groups are found by seeking the index from one to the next (a few dozen at
        most), so a group that appeared a second ago is not missed.
        """
        where = self._where(filters, now, listing=True)
        if self._store.dialect == "sqlite":
            where = [without_filter_indexes(condition) for condition in where]
        by_state = sort is LinkSort.STATE
        keys = _sort_keys(sort)
        order = [expr.asc() if d == _ASC else expr.desc() for expr, d, _ in keys]
        if by_state:
            order = [Link.link_id.asc()]  # state and error are the group's: the rest of the key
        results: list[tuple[Any, _ListedInstitution]] = []
        with self._store.read() as session:
            keep_to_page_order(session, self._store.dialect)
            start = (cursor[0], cursor[1]) if by_state and cursor else None
            for state, error_code in self._groups(session, filters, by_state, start):
                if by_state and len(results) > limit:
                    break
                if _group_can_match(filters, state, error_code):
                    stmt = (
                        sa.select(*_LIST_LINK_COLUMNS, *_LIST_INSTITUTION_COLUMNS)
                        .join(Institution, Institution.institution_id == Link.institution_id)
                        .where(*_group_condition(state, error_code, by_state), *where)
                        .order_by(*order)
                        .limit(limit + 1 - len(results) if by_state else limit + 1)
                    )
                    if cursor is not None and not by_state:
                        stmt = stmt.where(_after_condition(keys, cursor))
                    elif cursor is not None and (state, error_code) == (cursor[0], cursor[1]):
                        stmt = stmt.where(Link.link_id > cursor[2])
                    results.extend(_split_list_row(row) for row in session.execute(stmt).all())
        if not by_state:
            descending = keys[0][1] == _DESC
            results.sort(key=lambda item: (item[0].updated_at, item[0].link_id), reverse=descending)
        return results[: limit + 1]

    def _groups(
        self, session: Any, filters: LinkFilters, by_state: bool, start: tuple[str, str] | None
    ) -> Iterator[tuple[str, str]]:
        """The (state, error code) groups to read, in (state, error) order from ``start``.

        A verdict made of error codes (needs relink, wait) names its groups itself: reading them
        in update order needs no seeks (a group with no links reads nothing). Otherwise the
        groups are found in the index, one seek or two each.
        """
        known = None if by_state else _groups_of(filters)
        if known is not None:
            yield from known
            return
        group = self._next_group(session, start)
        while group is not None:
            yield group
            group = self._next_group(session, group, inclusive=False)

    @staticmethod
    def _next_group(
        session: Any, after: tuple[str, str] | None, *, inclusive: bool = True
    ) -> tuple[str, str] | None:
        """The first (state, error code) group at or after ``after`` (strictly after unless
        ``inclusive``), by two index seeks: a row-value range over the two would be read as a
        range over the state alone, i.e. through every group of that state."""
        error = error_sort_key()
        seek = sa.select(Link.state, error).order_by(Link.state.asc(), error.asc()).limit(1)
        if after is None:
            found = session.execute(seek).first()
        else:
            state, error_code = after
            same_state = error >= error_code if inclusive else error > error_code
            found = session.execute(seek.where(Link.state == state, same_state)).first()
            if found is None:
                found = session.execute(seek.where(Link.state > state)).first()
        return (found[0], found[1]) if found is not None else None

    def count_links(self, filters: LinkFilters | None = None, *, cap: int | None = None) -> int:
        """How many links match. With ``cap``, counting stops after ``cap + 1`` matches, so any
        result above ``cap`` means "more than cap" (cheap however many links match)."""
        filters = filters or LinkFilters()
        now = self._clock()
        where = self._where(filters, now)
        if cap is None:
            stmt = sa.select(sa.func.count()).select_from(Link).where(*where)
        else:
            matches = sa.select(sa.literal(1)).select_from(Link).where(*where)
            limited = matches.limit(max(0, int(cap)) + 1).subquery()
            stmt = sa.select(sa.func.count()).select_from(limited)
        with self._store.read() as session:
            return int(session.execute(stmt).scalar_one())

    def counts_by_state(self) -> dict[str, int]:
        stmt = sa.select(Link.state, sa.func.count()).group_by(Link.state)
        with self._store.read() as session:
            return {state: int(n) for state, n in session.execute(stmt).all()}

    def counts_by_error(self) -> dict[str, int]:
        stmt = (
            sa.select(Link.error_code, sa.func.count())
            .where(Link.state == "error")
            .group_by(Link.error_code)
        )
        with self._store.read() as session:
            return {code or "": int(n) for code, n in session.execute(stmt).all()}

    def counts_by_health(self, *, max_age: float = 0.0) -> dict[Health, int]:
        """Links per verdict; see :meth:`health_summary` for ``max_age``."""
        return dict(self.health_summary(max_age=max_age).counts)

    def health_summary(self, *, max_age: float = 0.0) -> HealthSummary:
        """Links per verdict and per error code, in one pass over the table.

        ``max_age`` (seconds) accepts a summary that this process computed that recently for
        any caller; a page passes it so that every session shares one count of a large table.
        The default, 0, counts now.
        """
        return self._shared_summary.get(max_age)

    def ready_health_summary(self, *, max_age: float, wait: float = 0.0) -> HealthSummary | None:
        """:meth:`health_summary` without waiting for a count (beyond ``wait`` seconds): None
        until this process has one, or a stored one (see linkdesk.store.shared), while one
        background thread counts. A page draws its rows meanwhile instead of waiting seconds for
        the totals of a large store on its first run."""
        return self._shared_summary.get_if_ready(max_age, wait=wait)

    def _group_in(self, session: Session, link: Link | None) -> tuple[Health, str, str] | None:
        if link is None:
            return None
        verdict = assess_link(link, now=self._clock(), thresholds=self._thresholds)
        return (verdict.health, link.state, link.error_code or "")

    def _count_moved(
        self, before: tuple[Health, str, str] | None, after: tuple[Health, str, str] | None
    ) -> None:
        """One link moved from group ``before`` to ``after`` (None: it was not stored, or is
        gone): the shared totals (this process's and the stored ones) change at once, so the
        numbers a staff action changed are right on the next run of any page, without counting
        the table again."""
        if before == after:
            return

        def move(summary: HealthSummary) -> HealthSummary:
            groups = dict(summary.groups)
            if before is not None and groups.get(before, 0) > 0:
                groups[before] -= 1
                if groups[before] == 0:
                    del groups[before]
            if after is not None:
                groups[after] = groups.get(after, 0) + 1
            return HealthSummary.from_groups(groups, summary.computed_at)

        self._shared_summary.adjust(move)

    @contextmanager
    def writing(self, link_id: str) -> Iterator[Session]:
        """A write transaction that may move ``link_id`` between the shared totals' groups (a
        staff action, an applied webhook, a Connect completion). The link's group is read inside
        the transaction before and after the caller's writes, and the totals follow once it has
        committed (see :meth:`_count_moved`).

        Two writers to one link take turns (SQLite's ``BEGIN IMMEDIATE``; a transaction-scoped
        advisory lock on PostgreSQL, which also covers a link not stored yet), so whichever comes
        second sees the first one's result as its "before": a new link that Connect's Done and
        its webhook both store is counted once, whichever lands first and however they overlap.
        """
        with self._store.write() as session:
            if session.get_bind().dialect.name == "postgresql":
                key = sa.func.hashtextextended(link_id, 0)
                session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
            before = self._group_in(session, session.get(Link, link_id, with_for_update=True))
            yield session
            session.flush()
            # Re-read: the caller may have changed the row with a statement the ORM never saw.
            after = self._group_in(session, session.get(Link, link_id, populate_existing=True))
        self._count_moved(before, after)

    def _compute_health_summary(self) -> HealthSummary:
        now = self._clock()
        groups: dict[tuple[Health, str, str], int] = {}
        verdict = health_case(now, self._thresholds).label("verdict")
        stmt = (
            sa.select(verdict, Link.state, Link.error_code, sa.func.count())
            .select_from(Link)
            .group_by(verdict, Link.state, Link.error_code)
        )
        with self._store.read() as session:
            for value, state, error_code, n in session.execute(stmt).all():
                groups[(Health(value), state, error_code or "")] = int(n)
        return HealthSummary.from_groups(groups, now)

    def get_link(self, link_id: str) -> LinkDetail | None:
        with self._store.read() as session:
            found = session.execute(
                sa.select(Link, Institution)
                .join(Institution, Institution.institution_id == Link.institution_id)
                .where(Link.link_id == link_id)
            ).first()
            if found is None:
                return None
            link, institution = found
            now = self._clock()
            accounts = session.scalars(
                sa.select(Account).where(Account.link_id == link_id).order_by(Account.name)
            ).all()
            changes = session.scalars(
                sa.select(LinkStateChange)
                .where(LinkStateChange.link_id == link_id)
                .order_by(LinkStateChange.at.desc(), LinkStateChange.id.desc())
                .limit(50)
            ).all()
            row = self._row(link, institution, now)
            detail = LinkDetail(
                row=row,
                accounts=[
                    AccountRow(
                        account_id=a.account_id,
                        name=a.name,
                        account_type=a.account_type,
                        mask=a.mask,
                        currency=a.currency,
                        balance_current=a.balance_current,
                        balance_available=a.balance_available,
                        closed=a.closed,
                    )
                    for a in accounts
                ],
                state_changes=[
                    StateChangeRow(
                        at=c.at,
                        from_state=c.from_state,
                        from_error=c.from_error,
                        to_state=c.to_state,
                        to_error=c.to_error,
                        source=c.source,
                    )
                    for c in changes
                ],
            )
        return replace(
            detail,
            sessions=self.recent_sessions(20, link_id=link_id),
            audit=self.audit_entries(20, link_id=link_id),
            relink_in_progress=self.relink_in_progress(link_id),
            sync_attempts=self.sync_attempts(20, link_id=link_id),
        )

    # -- reference data ----------------------------------------------------------------------

    def list_institutions(self) -> list[InstitutionRow]:
        counts = (
            sa.select(Link.institution_id, sa.func.count().label("n"))
            .group_by(Link.institution_id)
            .subquery()
        )
        stmt = (
            sa.select(Institution, sa.func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.institution_id == Institution.institution_id)
            .order_by(Institution.name, Institution.institution_id)
        )
        with self._store.read() as session:
            return [
                InstitutionRow(
                    institution_id=inst.institution_id,
                    name=inst.name,
                    country=inst.country,
                    domain=inst.domain,
                    color=safe_hex_color(inst.color),
                    color_dark=safe_hex_color(inst.color_dark),
                    logo=safe_logo_url(inst.logo),
                    logo_dark=safe_logo_url(inst.logo_dark),
                    avatar=safe_logo_url(inst.avatar),
                    avatar_dark=safe_logo_url(inst.avatar_dark),
                    link_count=int(n),
                )
                for inst, n in session.execute(stmt).all()
            ]

    def institution_names(self, *, max_age: float = 0.0) -> dict[str, str]:
        """Institution id → name, ordered by name (without the per-institution link counts of
        :meth:`list_institutions`, which read the whole links table); ``max_age`` as for
        :meth:`health_summary`."""
        return dict(self._shared_institution_names.get(max_age))

    def _compute_institution_names(self) -> dict[str, str]:
        stmt = sa.select(Institution.institution_id, Institution.name).order_by(
            Institution.name, Institution.institution_id
        )
        with self._store.read() as session:
            return {str(iid): str(name) for iid, name in session.execute(stmt).all()}

    def list_customers(self, prefix: str = "", limit: int = 50) -> list[CustomerRow]:
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        needs_relink = sa.func.sum(sa.case((health_condition(Health.NEEDS_RELINK), 1), else_=0))
        stmt = (
            sa.select(Link.customer_id, sa.func.count(), needs_relink)
            .where(Link.customer_id.is_not(None))
            .group_by(Link.customer_id)
            .order_by(Link.customer_id)
            .limit(limit)
        )
        if prefix.strip():
            stmt = stmt.where(_prefix_range(Link.customer_id, prefix.strip()))
        with self._store.read() as session:
            return [
                CustomerRow(customer_id=cid, link_count=int(n), needs_relink=int(r or 0))
                for cid, n, r in session.execute(stmt).all()
            ]

    # -- sessions and audit ------------------------------------------------------------------

    def recent_sessions(self, limit: int = 20, *, link_id: str | None = None) -> list[SessionRow]:
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        events = (
            sa.select(sa.func.count())
            .where(ConnectEvent.session_id == ConnectSession.id)
            .correlate(ConnectSession)
            .scalar_subquery()
        )
        stmt = sa.select(ConnectSession, events)
        if link_id is not None:
            stmt = stmt.where(ConnectSession.link_id == link_id)
        stmt = stmt.order_by(ConnectSession.started_at.desc(), ConnectSession.id.desc()).limit(
            limit
        )
        with self._store.read() as session:
            return [session_row(s, int(n)) for s, n in session.execute(stmt).all()]

    def audit_entries(
        self,
        limit: int = 50,
        *,
        link_id: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        customer_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AuditRow]:
        """Newest first. ``action`` ending in ``.`` or ``*`` matches a prefix (``connect.``)."""
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        stmt = sa.select(AuditEntry)
        if link_id is not None:
            stmt = stmt.where(AuditEntry.link_id == link_id)
        if actor is not None:
            stmt = stmt.where(AuditEntry.actor == actor)
        if action:
            if action.endswith(("*", ".")):
                stmt = stmt.where(_prefix_range(AuditEntry.action, action.rstrip("*")))
            else:
                stmt = stmt.where(AuditEntry.action == action)
        if customer_id is not None:
            stmt = stmt.where(AuditEntry.customer_id == customer_id)
        if since is not None:
            stmt = stmt.where(AuditEntry.at >= since)
        if until is not None:
            stmt = stmt.where(AuditEntry.at < until)
        stmt = stmt.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
        with self._store.read() as session:
            return [audit_row(a) for a in session.scalars(stmt).all()]

    # -- relink, worker, webhooks, customer links ----------------------------------------------

    def relink_in_progress(self, link_id: str) -> RelinkInProgress | None:
        """Who is relinking ``link_id`` right now (an expired lease counts as nobody)."""
        now = self._clock()
        with self._store.read() as session:
            lease = session.get(RelinkLease, link_id)
            if lease is None or lease.expires_at <= now:
                return None
            return RelinkInProgress(
                link_id=lease.link_id,
                holder=lease.holder,
                since=lease.acquired_at,
                expires_at=lease.expires_at,
                session_id=lease.session_id,
            )

    def sync_attempts(self, limit: int = 50, *, link_id: str | None = None) -> list[SyncAttemptRow]:
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        stmt = sa.select(SyncAttempt)
        if link_id is not None:
            stmt = stmt.where(SyncAttempt.link_id == link_id)
        stmt = stmt.order_by(SyncAttempt.at.desc(), SyncAttempt.id.desc()).limit(limit)
        with self._store.read() as session:
            return [
                SyncAttemptRow(
                    at=a.at,
                    link_id=a.link_id,
                    kind=a.kind,
                    outcome=a.outcome,
                    error=a.error,
                    duration_ms=a.duration_ms,
                    worker=a.worker,
                )
                for a in session.scalars(stmt).all()
            ]

    def worker_status(self, *, max_age: float = 0.0) -> WorkerStatus:
        """The worker's progress; ``max_age`` as for :meth:`health_summary`."""
        return self._shared_worker_status.get(max_age)

    def _compute_worker_status(self) -> WorkerStatus:
        now = self._clock()
        hour_ago = now - timedelta(hours=1)
        free = sa.or_(SyncJob.claimed_until.is_(None), SyncJob.claimed_until < now)
        with self._store.read() as session:
            total = session.scalar(sa.select(sa.func.count()).select_from(SyncJob)) or 0
            due, oldest = session.execute(
                sa.select(sa.func.count(), sa.func.min(SyncJob.due_at)).where(
                    SyncJob.due_at <= now, free
                )
            ).one()
            claimed = session.scalar(sa.select(sa.func.count()).where(SyncJob.claimed_until >= now))
            recent = dict(
                session.execute(
                    sa.select(SyncAttempt.outcome, sa.func.count())
                    .where(SyncAttempt.at >= hour_ago, SyncAttempt.kind == "link")
                    .group_by(SyncAttempt.outcome)
                ).all()
            )
            synced = session.scalar(
                sa.select(sa.func.count(sa.distinct(SyncAttempt.link_id))).where(
                    SyncAttempt.at >= hour_ago,
                    SyncAttempt.kind == "link",
                    SyncAttempt.outcome.in_(["ok", "deleted"]),
                )
            )
            last_error = session.scalar(
                sa.select(SyncAttempt.error)
                .where(SyncAttempt.outcome == "error")
                .order_by(SyncAttempt.at.desc(), SyncAttempt.id.desc())
                .limit(1)
            )
            discovery = session.get(SyncJob, "discovery")
            last_run = session.get(WorkerState, "last_run")
            paused = session.get(WorkerState, "paused")
            suspect = session.get(WorkerState, "discovery_suspect")
            pending = session.scalar(
                sa.select(sa.func.count()).where(WebhookEvent.status == "pending")
            )
            last_run_value = dict(last_run.value or {}) if last_run is not None else {}
        oldest_due: Any = oldest
        if isinstance(oldest_due, str):
            oldest_due = datetime.fromisoformat(oldest_due)
        if isinstance(oldest_due, datetime) and oldest_due.tzinfo is None:
            oldest_due = oldest_due.replace(tzinfo=UTC)
        return WorkerStatus(
            now=now,
            last_run_at=last_run.updated_at if last_run is not None else None,
            last_run_by=last_run_value.get("worker") if last_run_value else None,
            paused=bool(paused is not None and (paused.value or {}).get("paused")),
            jobs_total=int(total),
            jobs_due=int(due or 0),
            jobs_claimed=int(claimed or 0),
            oldest_due_at=oldest_due,
            links_synced_last_hour=int(synced or 0),
            errors_last_hour=int(recent.get("error", 0)),
            rate_limited_last_hour=int(recent.get("rate_limited", 0)),
            last_error=last_error,
            last_discovery_at=discovery.last_success_at if discovery is not None else None,
            webhooks_pending=int(pending or 0),
            discovery_suspect=dict(suspect.value or {}) if suspect is not None else None,
        )

    def customer_links(self, link_id: str, limit: int = 20) -> list[CustomerLinkRow]:
        limit = max(1, min(int(limit), MAX_PAGE_SIZE))
        stmt = (
            sa.select(CustomerLinkToken)
            .where(CustomerLinkToken.link_id == link_id)
            .order_by(CustomerLinkToken.created_at.desc())
            .limit(limit)
        )
        with self._store.read() as session:
            return [
                CustomerLinkRow(
                    id=t.id,
                    link_id=t.link_id,
                    customer_id=t.customer_id,
                    created_by=t.created_by,
                    created_at=t.created_at,
                    expires_at=t.expires_at,
                    used_at=t.used_at,
                    finished_at=t.finished_at,
                    outcome=t.outcome,
                    reason=t.reason,
                )
                for t in session.scalars(stmt).all()
            ]


_LIST_LINK_FIELDS = (
    "link_id", "customer_id", "institution_id", "state", "error_code", "provider", "tags",
    "created_at", "last_synced_at", "products_refreshed_at", "discovered_at", "updated_at",
    "last_webhook_at", "refresh_issue",
)  # fmt: skip
_LIST_INSTITUTION_FIELDS = (
    "institution_id", "name", "color", "color_dark", "logo", "logo_dark", "avatar", "avatar_dark",
)  # fmt: skip
_LIST_LINK_COLUMNS = [getattr(Link, name) for name in _LIST_LINK_FIELDS]
_LIST_INSTITUTION_COLUMNS = [
    getattr(Institution, name).label(f"i_{name}") for name in _LIST_INSTITUTION_FIELDS
]


@dataclass(frozen=True, slots=True)
class _ListedInstitution:
    institution_id: str
    name: str
    color: str | None
    color_dark: str | None
    logo: str | None
    logo_dark: str | None
    avatar: str | None
    avatar_dark: str | None


def _split_list_row(row: sa.Row[Any]) -> tuple[Any, _ListedInstitution]:
    values = row._mapping
    institution = _ListedInstitution(*(values[f"i_{name}"] for name in _LIST_INSTITUTION_FIELDS))
    return row, institution


def _read_by_group(filters: LinkFilters, sort: LinkSort) -> bool:
    """Whether a page is read group by group (LinkQueries._list_by_group) rather than at once.

    Sorted by state, always: the groups are the sort. Sorted by update time, when a verdict,
    error or state filter picks a few groups of links that changed recently (errors, Connect in
    progress): their links all sit at one end of the update order, so reading that order and
    keeping the matches reads most of the table, and collecting them sorts a hundred thousand.
    Healthy links are most links (read in order), stale ones are collected (linkdesk.store.plans).
    """
    if filters.search or filters.customer:
        return False
    if sort is LinkSort.STATE:
        return True
    if sort not in (LinkSort.UPDATED_DESC, LinkSort.UPDATED_ASC) or filters.institution_id:
        return False
    health = Health(filters.health) if filters.health is not None else None
    if health in (Health.HEALTHY, Health.STALE):
        return False
    return health is not None or bool(filters.error_code) or bool(filters.state)


def _groups_of(filters: LinkFilters) -> list[tuple[str, str]] | None:
    """Every (state, error code) group that can hold matches, when the filters say which: the
    error codes of the needs relink and wait verdicts, or one state with one error code."""
    health = Health(filters.health) if filters.health is not None else None
    if health is Health.NEEDS_RELINK:
        return [("error", code) for code in sorted(RELINK_ERRORS)]
    if health is Health.WAIT:
        return [("error", code) for code in sorted(WAIT_ERRORS)]
    if filters.state and filters.error_code:
        return [(filters.state, filters.error_code)]
    return None


def _group_condition(state: str, error_code: str, by_state: bool) -> list[ColumnElement[bool]]:
    """One (state, error code) group, phrased for the index that reads it in the page's order:
    sorted by state, the state index (state, error, link id); sorted by update time, the error
    index (error, update time) for a group with an error code, else the state index (state,
    update time). The other column is then only checked."""
    error = error_sort_key()
    if by_state:
        return [Link.state == state, error == error_code]
    if error_code:
        return [Link.error_code == error_code, unindexed(Link.state) == state]
    return [Link.state == state, unindexed(error) == ""]


def _group_can_match(filters: LinkFilters, state: str, error_code: str) -> bool:
    """Whether links in state ``state`` with error ``error_code`` ("" for none) can match."""
    if filters.state and state != filters.state:
        return False
    if filters.error_code and error_code != filters.error_code:
        return False
    if not filters.include_deleted and state == "deleted":
        return False
    if filters.health is None:
        return True
    wanted = Health(filters.health)
    family = link_health(state, error_code or None)  # the verdict without the clock
    if wanted is Health.STALE:
        return family is Health.HEALTHY
    if wanted is Health.PENDING:
        return family is Health.STUCK
    return family is wanted


def _key_value(sort: LinkSort, index: int, link: Any, institution: Any) -> Any:
    """The value of sort key ``index`` for a row, as the SQL expression would compute it."""
    columns: dict[LinkSort, list[Any]] = {
        LinkSort.UPDATED_DESC: [link.updated_at, link.link_id],
        LinkSort.UPDATED_ASC: [link.updated_at, link.link_id],
        LinkSort.LINK_ID: [link.link_id],
        LinkSort.INSTITUTION: [institution.name, link.link_id],
        LinkSort.CUSTOMER: [link.customer_id or "", link.link_id],
        LinkSort.STATE: [link.state, link.error_code or "", link.link_id],
    }
    return columns[sort][index]


def session_row(s: ConnectSession, event_count: int = 0) -> SessionRow:
    return SessionRow(
        session_id=s.id,
        mode=s.mode,
        customer_id=s.customer_id,
        link_id=s.link_id,
        started_by=s.started_by,
        started_at=s.started_at,
        outcome=s.outcome,
        exit_error_id=s.exit_error_id,
        exit_message=s.exit_message,
        exit_request_id=s.exit_request_id,
        failure_message=s.failure_message,
        exchanged_at=s.exchanged_at,
        finished_at=s.finished_at,
        event_count=event_count,
    )


def audit_row(a: AuditEntry) -> AuditRow:
    return AuditRow(
        id=a.id,
        at=a.at,
        actor=a.actor,
        action=a.action,
        link_id=a.link_id,
        customer_id=a.customer_id,
        outcome=a.outcome,
        detail=a.detail,
        role=a.role,
        reason=a.reason,
    )
