"""The Links screen's reads: a page of links in any order under any filters, how many match,
and the institutions and customers its filters offer.

A page is read by one of a few plans (linkdesk.store.plans), chosen from the shared totals, so
that every filter and sort costs about the same at ten thousand links as at a million.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from linkdesk.health import (
    RELINK_ERRORS,
    WAIT_ERRORS,
    Health,
    HealthThresholds,
    health_condition,
    health_condition_at,
    link_health,
)
from linkdesk.read.link_order import (
    ASC,
    DESC,
    Expr,
    LinkSort,
    decode_link_cursor,
    encode_link_cursor,
    error_sort_key,
    escape_like,
    key_values,
    prefix_range,
    rows_after,
    sort_keys,
)
from linkdesk.read.link_rows import (
    LIST_COLUMNS,
    LinkRow,
    LinkRows,
    ListedInstitution,
    split_list_row,
)
from linkdesk.store.aggregates import bounded
from linkdesk.store.engine import Store
from linkdesk.store.health_totals import HealthSummary, HealthTotals
from linkdesk.store.models import Institution, Link, LinkCount
from linkdesk.store.plans import (
    Plan,
    choose_plan,
    filter_share,
    keep_to_filter_index,
    keep_to_page_order,
    unindexed,
    without_filter_indexes,
)
from linkdesk.store.shared import SharedResult
from linkdesk.validation import safe_hex_color, safe_logo_url

__all__ = [
    "CustomerRow",
    "InstitutionRow",
    "LinkFilters",
    "LinkPage",
    "LinkQueries",
    "LinkRow",
    "LinkSort",
    "Matching",
    "matching_links",
]

# Shares of links per verdict, state, error code and bank older than this are recounted (in the
# background) before a page's plan is chosen with them.
_PLAN_COUNTS_MAX_AGE = 600.0
# A bank-name search whose banks hold at least this share of the links is listed by reading the
# links in the page's order (see LinkQueries._where).
_WALK_IN_ORDER_SHARE = 0.01


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
class LinkPage:
    rows: list[LinkRow]
    next_cursor: str | None  # None on the last page


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


class LinkQueries:
    """``clock`` and ``thresholds`` decide the time-dependent verdicts (stuck, stale).

    ``totals``: the process's shared totals, which answer the unfiltered counts and choose each
    page's plan (a store of their own when not given); ``monotonic`` ages this class's own
    shared counts (institution names and sizes), so tests step it instead of sleeping.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime] | None = None,
        thresholds: HealthThresholds | None = None,
        totals: HealthTotals | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))
        self._thresholds = thresholds or HealthThresholds()
        self.totals = totals or HealthTotals(
            store, clock=self._clock, thresholds=self._thresholds, monotonic=monotonic
        )
        self._rows = LinkRows(self._thresholds)
        self._shared_institution_names = SharedResult(
            self._compute_institution_names, monotonic=monotonic
        )

    @property
    def thresholds(self) -> HealthThresholds:
        """The thresholds of the time-dependent verdicts."""
        return self._thresholds

    def conditions(self, filters: LinkFilters, now: datetime) -> list[ColumnElement[bool]]:
        """The filters as SQL on ``links`` at ``now``, for other reads of the same view."""
        return self._where(filters, now)

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
            where.append(prefix_range(Link.customer_id, filters.customer.strip()))
        if not filters.include_deleted:
            where.append(Link.state != "deleted")
        search = (filters.search or "").strip()
        if search:
            # Institutions are few: find the matching ones first, so the links are searched by
            # two indexed conditions (link id range, institution ids) instead of a join.
            institution_ids = self._institutions_named(search)
            by_id = prefix_range(Link.link_id, search)
            institution: Expr = Link.institution_id
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
        # Links per bank are part of the shared totals (only to choose a plan: minutes-old
        # counts are good enough). Until there are totals, the index plan is used: never the
        # slowest choice by much, and nobody waits for a count.
        summary = self.totals.ready_health_summary(max_age=_PLAN_COUNTS_MAX_AGE)
        if summary is None or not summary.total:
            return 0.0
        banks = summary.banks
        return sum(banks[i].links for i in institution_ids if i in banks) / summary.total

    def _institutions_named(self, text: str) -> list[str]:
        pattern = f"%{escape_like(text.lower())}%"
        stmt = sa.select(Institution.institution_id).where(
            sa.func.lower(Institution.name).like(pattern, escape="\\")
        )
        with self._store.read() as session:
            return list(session.scalars(stmt).all())

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
        limit = bounded(limit)
        cursor = decode_link_cursor(after, sort) if after else None
        now = self._clock()
        if _read_by_group(filters, sort):
            results = self._list_by_group(filters, sort, now, limit, cursor)
        else:
            results = self._list_in_one_read(filters, sort, now, limit, cursor)
        rows = [self._rows.row(link, inst, now) for link, inst in results[:limit]]
        next_cursor = None
        if len(results) > limit:
            last_link, last_inst = results[limit - 1]
            next_cursor = encode_link_cursor(sort, key_values(sort, last_link, last_inst))
        return LinkPage(rows=rows, next_cursor=next_cursor)

    def _list_in_one_read(
        self,
        filters: LinkFilters,
        sort: LinkSort,
        now: datetime,
        limit: int,
        cursor: list[Any] | None,
    ) -> list[tuple[Any, ListedInstitution]]:
        keys = sort_keys(sort)
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
            where.append(rows_after(keys, cursor))
        order = [expr.asc() if d == ASC else expr.desc() for expr, d, _ in keys]
        if plan is Plan.COLLECT:
            page_ids = sa.select(Link.link_id).where(*where).order_by(*order).limit(limit + 1)
            if sort is LinkSort.INSTITUTION:
                # Joined from the links' side only, so the filter's index still leads.
                page_ids = page_ids.join(
                    Institution, Institution.institution_id == unindexed(Link.institution_id)
                )
            chosen = page_ids.subquery("page_ids")
            where = [Link.link_id == chosen.c.link_id]
            order = [expr.asc() if d == ASC else expr.desc() for expr, d, _ in sort_keys(sort)]
        # Plain columns rather than ORM entities: building identity-mapped objects (and decoding
        # the institutions' JSON we do not show) was most of a page's cost.
        stmt = (
            sa.select(*LIST_COLUMNS)
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
            return [split_list_row(row) for row in session.execute(stmt).all()]

    def _plan(self, filters: LinkFilters, sort: LinkSort, limit: int) -> Plan | None:
        """Walk or collect (see linkdesk.store.plans); None leaves the choice to the database.

        Decided from the shared health summary as it is (minutes old is precise enough); until
        there is one, the database decides and nobody waits for the count.
        """
        if filters.search or filters.customer:
            return None  # a customer prefix is rare; a search has its own choice (see _where)
        summary = self.totals.ready_health_summary(max_age=_PLAN_COUNTS_MAX_AGE)
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
    ) -> list[tuple[Any, ListedInstitution]]:
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
        keys = sort_keys(sort)
        order = [expr.asc() if d == ASC else expr.desc() for expr, d, _ in keys]
        if by_state:
            order = [Link.link_id.asc()]  # state and error are the group's: the rest of the key
        results: list[tuple[Any, ListedInstitution]] = []
        with self._store.read() as session:
            keep_to_page_order(session, self._store.dialect)
            start = (cursor[0], cursor[1]) if by_state and cursor else None
            for state, error_code in self._groups(session, filters, by_state, start):
                if by_state and len(results) > limit:
                    break
                if _group_can_match(filters, state, error_code):
                    stmt = (
                        sa.select(*LIST_COLUMNS)
                        .join(Institution, Institution.institution_id == Link.institution_id)
                        .where(*_group_condition(state, error_code, by_state), *where)
                        .order_by(*order)
                        .limit(limit + 1 - len(results) if by_state else limit + 1)
                    )
                    if cursor is not None and not by_state:
                        stmt = stmt.where(rows_after(keys, cursor))
                    elif cursor is not None and (state, error_code) == (cursor[0], cursor[1]):
                        stmt = stmt.where(Link.link_id > cursor[2])
                    results.extend(split_list_row(row) for row in session.execute(stmt).all())
        if not by_state:
            descending = keys[0][1] == DESC
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

    def list_institutions(self) -> list[InstitutionRow]:
        counts = (
            sa.select(LinkCount.institution_id, sa.func.sum(LinkCount.links).label("n"))
            .group_by(LinkCount.institution_id)
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
        :meth:`list_institutions`); ``max_age`` as for :meth:`health_summary`."""
        return dict(self._shared_institution_names.get(max_age))

    def _compute_institution_names(self) -> dict[str, str]:
        stmt = sa.select(Institution.institution_id, Institution.name).order_by(
            Institution.name, Institution.institution_id
        )
        with self._store.read() as session:
            return {str(iid): str(name) for iid, name in session.execute(stmt).all()}

    def list_customers(self, prefix: str = "", limit: int = 50) -> list[CustomerRow]:
        limit = bounded(limit)
        needs_relink = sa.func.sum(sa.case((health_condition(Health.NEEDS_RELINK), 1), else_=0))
        stmt = (
            sa.select(Link.customer_id, sa.func.count(), needs_relink)
            .where(Link.customer_id.is_not(None))
            .group_by(Link.customer_id)
            .order_by(Link.customer_id)
            .limit(limit)
        )
        if prefix.strip():
            stmt = stmt.where(prefix_range(Link.customer_id, prefix.strip()))
        with self._store.read() as session:
            return [
                CustomerRow(customer_id=cid, link_count=int(n), needs_relink=int(r or 0))
                for cid, n, r in session.execute(stmt).all()
            ]


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


@dataclass(frozen=True, slots=True)
class Matching:
    """How many links match a view; not ``exact`` when counting stopped at the cap."""

    count: int
    exact: bool


def matching_links(
    queries: LinkQueries, summary: HealthSummary | None, filters: LinkFilters, *, cap: int
) -> Matching:
    """No filter, or a health or an error filter alone, is answered by the shared summary
    (exact, and moved at once by every write that changes a link's group); any other
    combination is counted now, stopping after ``cap``, so a broad view stays cheap at any size."""
    if summary is not None:
        if filters == LinkFilters():
            return Matching(summary.total, exact=True)
        if filters.health is not None and filters == LinkFilters(health=filters.health):
            return Matching(summary.counts[filters.health], exact=True)
        if filters.error_code and filters == LinkFilters(error_code=filters.error_code):
            return Matching(summary.errors.get(filters.error_code, 0), exact=True)
    counted = queries.count_links(filters, cap=cap)
    return Matching(counted, exact=counted <= cap)
