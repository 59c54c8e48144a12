"""Store: migrations, writer locking, keyset pagination, read queries.

Tests that take ``store``/``database_url`` run on SQLite and on PostgreSQL (tests/conftest.py);
the ones about SQLite's own machinery (WAL, BEGIN IMMEDIATE, the shared in-memory connection)
run on SQLite only.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkdesk.__main__ import main as cli_main
from linkdesk.health import Health, link_health
from linkdesk.moneykit.models import Account as ApiAccount
from linkdesk.moneykit.models import Link as ApiLink
from linkdesk.read.activity import ActivityReads
from linkdesk.read.link_detail import LinkDetailReads
from linkdesk.read.link_order import LinkSort
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store import Store, create_engine, downgrade, migrate
from linkdesk.store.cursor import InvalidCursor
from linkdesk.store.models import AuditEntry, Base, ConnectEvent, ConnectSession
from linkdesk.store.repository import (
    InstitutionData,
    mark_link_deleted,
    replace_accounts,
    upsert_institution,
    upsert_link,
)
from tests.conftest import empty_all_tables, listed_order_key

T0 = datetime(2025, 1, 1, tzinfo=UTC)

EXPECTED_TABLES = {
    "customers",
    "institutions",
    "links",
    "link_products",
    "accounts",
    "connect_sessions",
    "connect_events",
    "link_state_changes",
    "audit_log",
    "webhook_deliveries",
    "relink_leases",
    "webhook_events",
    "sync_jobs",
    "sync_attempts",
    "worker_state",
    "customer_link_tokens",
}


def api_link(
    link_id: str,
    *,
    institution_id: str = "bank-a",
    institution_name: str = "Bank A",
    state: str = "connected",
    error_code: str | None = None,
    tags: list[str] | None = None,
) -> ApiLink:
    return ApiLink.model_validate(
        {
            "link_id": link_id,
            "institution_id": institution_id,
            "institution_name": institution_name,
            "state": state,
            "error_code": error_code,
            "link_tags": tags or [],
            "provider": "moneykit",
        }
    )


# -- migrations ------------------------------------------------------------------------------


FRESH_INDEX = "ix_links_state_fresh_updated"


def test_migration_creates_schema_matching_the_models(
    tmp_path: Path, database_backend: str, empty_database_url: str
):
    sqlite = database_backend == "sqlite"
    # A SQLite file's folder is created, like var/ for the default path.
    url = f"sqlite:///{tmp_path / 'nested' / 'db.sqlite'}" if sqlite else empty_database_url
    migrate(url)
    engine = create_engine(url)
    try:
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) >= EXPECTED_TABLES
        link_indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("links")}
        assert link_indexes["ix_links_state_updated"][0] == "state"
        assert link_indexes["ix_links_error_updated"][0] == "error_code"
        assert link_indexes["ix_links_institution_updated"][0] == "institution_id"
        assert link_indexes["ix_links_customer"][0] == "customer_id"
        if not sqlite:
            # Stale links sorted by update time are read from this index alone (migration 0005).
            (fresh,) = (i for i in inspector.get_indexes("links") if i["name"] == FRESH_INDEX)
            assert fresh["dialect_options"]["postgresql_include"] == [
                "products_refreshed_at",
                "created_at",
                "discovered_at",
            ]
        uniques = inspector.get_unique_constraints("connect_events")
        assert any(u["column_names"] == ["session_id", "seq"] for u in uniques)
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
            assert diff == []
            if sqlite:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            assert version == "0012"
    finally:
        engine.dispose()
    migrate(url)  # a second run is a no-op


def test_migration_downgrade_and_upgrade_again(empty_database_url: str):
    url = empty_database_url
    migrate(url)
    downgrade(url, "base")
    engine = create_engine(url)
    assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    migrate(url)


def test_cli_migrate_creates_the_database(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert cli_main(["migrate"]) == 0
    assert (tmp_path / "var" / "linkdesk.db").exists()
    assert "latest schema" in capsys.readouterr().out


def test_alembic_ini_points_at_the_migrations():
    root = Path(__file__).resolve().parents[2]
    text = (root / "alembic.ini").read_text()
    assert "linkdesk/store/migrations" in text
    assert (root / "linkdesk/store/migrations/env.py").exists()


def test_audit_log_is_append_only(store: Store):
    with store.write() as session:
        session.add(AuditEntry(at=T0, actor="a", action="x", outcome="ok"))
    refused = pytest.raises(sa.exc.DatabaseError, match="append-only")
    with refused, store.write() as session:
        session.execute(sa.update(AuditEntry).values(actor="someone else"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.write() as s2:
        s2.execute(sa.delete(AuditEntry))


def test_event_sequence_is_unique_per_session(store: Store):
    with store.write() as session:
        session.add(ConnectSession(id="s", mode="link", started_by="a", started_at=T0))
        session.flush()
        session.add(ConnectEvent(session_id="s", seq=1, type="event", payload={}, recorded_at=T0))
    with pytest.raises(sa.exc.IntegrityError), store.write() as session:
        session.add(ConnectEvent(session_id="s", seq=1, type="event", payload={}, recorded_at=T0))


def test_naive_datetimes_are_refused(store: Store):
    with pytest.raises(sa.exc.StatementError), store.write() as session:
        session.add(AuditEntry(at=datetime(2025, 1, 1), actor="a", action="x", outcome="ok"))


# -- writer locking --------------------------------------------------------------------------


def test_writers_begin_immediate_so_read_then_write_does_not_deadlock(tmp_path: Path):
    """Two threads each read a counter then write it back. With a deferred BEGIN one of them
    fails with "database is locked" at its write; BEGIN IMMEDIATE serialises them instead."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    store = Store(create_engine(url))
    with store.write() as session:
        session.add(ConnectSession(id="c", mode="link", started_by="0", started_at=T0))
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            barrier.wait()
            for _ in range(10):
                with store.write() as session:
                    row = session.get(ConnectSession, "c")
                    assert row is not None
                    row.started_by = str(int(row.started_by) + 1)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.read() as session:
        assert session.get(ConnectSession, "c").started_by == "40"  # type: ignore[union-attr]
    store.dispose()


def test_write_rolls_back_on_error(store: Store):
    with pytest.raises(RuntimeError), store.write() as session:
        session.add(AuditEntry(at=T0, actor="a", action="x", outcome="ok"))
        session.flush()
        raise RuntimeError("boom")
    assert ActivityReads(store).audit_entries() == []


def test_in_store_is_shared_between_sessions(store: Store):
    with store.write() as session:
        session.add(AuditEntry(at=T0, actor="a", action="x", outcome="ok"))
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(len(ActivityReads(store).audit_entries())))
    thread.start()
    thread.join()
    assert seen == [1]


# -- write helpers ---------------------------------------------------------------------------


def test_upsert_link_records_state_changes_and_refuses_older_views(store: Store):
    with store.write() as session:
        first = upsert_link(
            session,
            api_link("l1", tags=["customer:c_1"]),
            customer_id="c_1",
            now=T0,
            source="sync",
        )
    assert first.created
    later = T0 + timedelta(minutes=5)
    with store.write() as session:
        changed = upsert_link(
            session,
            api_link("l1", state="error", error_code="auth_expired"),
            customer_id=None,
            now=later,
            source="sync",
        )
    assert changed.state_changed and not changed.created
    with store.write() as session:
        stale = upsert_link(
            session,
            api_link("l1"),
            customer_id=None,
            now=later + timedelta(minutes=1),
            source="sync",
            fetched_at=T0 + timedelta(minutes=1),  # read before the last stored view
        )
    assert stale.skipped_as_older
    detail = LinkDetailReads(store).get_link("l1")
    assert detail is not None
    assert (detail.row.state, detail.row.error_code) == ("error", "auth_expired")
    assert detail.row.health is Health.NEEDS_RELINK
    assert detail.row.customer_id == "c_1"  # kept though the later view had no customer
    assert [(c.from_state, c.to_state, c.to_error) for c in detail.state_changes] == [
        ("connected", "error", "auth_expired"),
        (None, "connected", None),
    ]


def test_institution_upsert_stores_only_validated_values(store: Store):
    with store.write() as session:
        upsert_institution(
            session,
            InstitutionData(
                institution_id="bank-a",
                name="Bank <b>A</b>",
                color="red;background:url(x)",
                color_dark="#ABCDEF",
                images={
                    "logo": ("https://x/logo.svg", "data:image/svg+xml;base64,PHN2Zy8+"),
                    "logo_dark": ("https://x/d.svg", "https://x/d.svg"),  # never stored remote
                    "avatar": ("https://x/a.svg", "javascript:alert(1)"),
                },
            ),
            T0,
        )
        upsert_link(session, api_link("l1"), customer_id=None, now=T0, source="sync")
    (inst,) = LinkQueries(store).list_institutions()
    assert inst.color is None and inst.color_dark == "#abcdef"
    assert inst.logo == "data:image/svg+xml;base64,PHN2Zy8+"
    assert inst.logo_dark is None and inst.avatar is None
    assert inst.name == "Bank <b>A</b>"  # names are escaped where rendered, stored as given
    assert inst.link_count == 1


def test_replace_accounts_and_mark_deleted(store: Store):
    acc = [
        ApiAccount.model_validate(
            {"account_id": f"a{i}", "name": f"Acc {i}", "balances": {"current": i}}
        )
        for i in range(3)
    ]
    with store.write() as session:
        upsert_link(session, api_link("l1"), customer_id=None, now=T0, source="sync")
        replace_accounts(session, "l1", acc, T0)
    with store.write() as session:
        replace_accounts(session, "l1", acc[1:], T0)
    with store.write() as session:
        assert mark_link_deleted(session, "l1", now=T0 + timedelta(1), source="sync")
        assert not mark_link_deleted(session, "l1", now=T0 + timedelta(2), source="sync")
        assert not mark_link_deleted(session, "nope", now=T0, source="sync")
    detail = LinkDetailReads(store).get_link("l1")
    assert detail is not None
    assert [a.account_id for a in detail.accounts] == ["a1", "a2"]
    assert detail.row.health is Health.DELETED


# -- health ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "error_code", "health"),
    [
        ("connected", None, Health.HEALTHY),
        ("error", "auth_expired", Health.NEEDS_RELINK),
        ("error", "invalid_credentials", Health.NEEDS_RELINK),
        ("error", "user_input_incorrect", Health.NEEDS_RELINK),
        ("error", "user_oauth_denied", Health.NEEDS_RELINK),
        ("error", "user_setup_required", Health.NEEDS_RELINK),
        ("error", "incomplete", Health.NEEDS_RELINK),
        ("error", "institution_error", Health.WAIT),
        ("error", "provider_error", Health.WAIT),
        ("error", "system_error", Health.WAIT),
        ("connecting", None, Health.STUCK),
        ("awaiting_token_exchange", None, Health.STUCK),
        ("deleted", None, Health.DELETED),
        ("error", "user_error", Health.ATTENTION),
        ("error", "no_accounts", Health.ATTENTION),
        ("error", None, Health.ATTENTION),
        ("something_new", None, Health.ATTENTION),
    ],
)
def test_link_health_and_its_sql_twin_agree(store: Store, state, error_code, health):
    assert link_health(state, error_code) is health
    with store.write() as session:
        upsert_link(
            session,
            api_link("l1", state=state, error_code=error_code),
            customer_id=None,
            now=T0,
            source="sync",
        )
        upsert_link(session, api_link("other"), customer_id=None, now=T0, source="sync")
    # An hour later: long enough to count a connecting link as stuck, too soon for stale.
    queries = LinkQueries(store, clock=lambda: T0 + timedelta(hours=1))
    page = queries.list_links(LinkFilters(health=health))
    expected = {"l1", "other"} if health is Health.HEALTHY else {"l1"}
    assert {r.link_id for r in page.rows} == expected
    counts = queries.totals.counts_by_health()
    assert set(counts) == set(Health)
    assert counts[health] == len(expected)


# -- list queries ----------------------------------------------------------------------------


@pytest.fixture
def seeded(store: Store) -> LinkQueries:
    specs = [
        ("mk_001", "bank-a", "Alpha Bank", "connected", None, "cust_0001"),
        ("mk_002", "bank-a", "Alpha Bank", "error", "auth_expired", "cust_0001"),
        ("mk_003", "bank-b", "Beta Credit Union", "error", "auth_expired", "cust_0002"),
        ("mk_004", "bank-b", "Beta Credit Union", "error", "institution_error", "cust_0010"),
        ("mk_005", "bank-c", "Gamma_%Bank", "awaiting_token_exchange", None, None),
        ("zz_006", "bank-c", "Gamma_%Bank", "deleted", None, "cust_0100"),
    ]
    for i, (lid, iid, name, state, err, cust) in enumerate(specs):
        tags = [f"customer:{cust}"] if cust else []
        with store.write() as session:
            upsert_link(
                session,
                api_link(
                    lid,
                    institution_id=iid,
                    institution_name=name,
                    state=state,
                    error_code=err,
                    tags=tags,
                ),
                customer_id=cust,
                now=T0 + timedelta(minutes=i),
                source="sync",
            )
    return LinkQueries(store, clock=lambda: T0 + timedelta(hours=1))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (LinkFilters(), {"mk_001", "mk_002", "mk_003", "mk_004", "mk_005", "zz_006"}),
        (LinkFilters(state="error"), {"mk_002", "mk_003", "mk_004"}),
        (LinkFilters(error_code="auth_expired"), {"mk_002", "mk_003"}),
        (LinkFilters(institution_id="bank-b"), {"mk_003", "mk_004"}),
        (LinkFilters(customer="cust_000"), {"mk_001", "mk_002", "mk_003"}),
        (LinkFilters(customer="cust_0001"), {"mk_001", "mk_002"}),
        (LinkFilters(customer="CUST"), set()),
        (LinkFilters(search="mk_00"), {"mk_001", "mk_002", "mk_003", "mk_004", "mk_005"}),
        (LinkFilters(search="credit"), {"mk_003", "mk_004"}),
        (LinkFilters(search="_%"), {"zz_006", "mk_005"}),  # LIKE wildcards are literal
        (LinkFilters(search="%"), {"zz_006", "mk_005"}),
        (LinkFilters(health=Health.STUCK), {"mk_005"}),
        (LinkFilters(health=Health.WAIT), {"mk_004"}),
        (LinkFilters(include_deleted=False, institution_id="bank-c"), {"mk_005"}),
        (LinkFilters(error_code="auth_expired", institution_id="bank-a"), {"mk_002"}),
    ],
)
def test_filters(seeded: LinkQueries, filters: LinkFilters, expected: set[str]):
    rows = seeded.list_links(filters, limit=100).rows
    assert {r.link_id for r in rows} == expected
    assert seeded.count_links(filters) == len(expected)


def test_rows_carry_institution_and_customer(seeded: LinkQueries):
    page = seeded.list_links(LinkFilters(search="mk_003"))
    (row,) = page.rows
    assert (row.institution_name, row.customer_id, row.state, row.error_code) == (
        "Beta Credit Union",
        "cust_0002",
        "error",
        "auth_expired",
    )
    assert row.health is Health.NEEDS_RELINK
    assert row.tags == ["customer:cust_0002"]
    assert row.updated_at.tzinfo is not None


def test_default_sort_is_most_recently_updated_first(seeded: LinkQueries):
    ids = [r.link_id for r in seeded.list_links().rows]
    assert ids == ["zz_006", "mk_005", "mk_004", "mk_003", "mk_002", "mk_001"]


def test_counts(seeded: LinkQueries):
    summary = seeded.totals.health_summary()
    by_state: dict[str, int] = {}
    for (_health, state, _error), n in summary.groups.items():
        by_state[state] = by_state.get(state, 0) + n
    assert by_state == {"connected": 1, "error": 3, "awaiting_token_exchange": 1, "deleted": 1}
    assert summary.counts[Health.NEEDS_RELINK] == 2 and summary.counts[Health.HEALTHY] == 1
    assert summary.errors == {"auth_expired": 2, "institution_error": 1}


def test_two_writers_storing_one_new_link_count_it_once(seeded: LinkQueries):
    # Connect's Done and the link's first webhook both store a new link, often at once: the
    # second writer must see the first one's row as its "before", however they overlap.
    counted = seeded.totals.health_summary(max_age=3600)
    first_inside = threading.Event()
    let_first_write = threading.Event()

    def store_the_link(*, pause: bool) -> None:
        with seeded.totals.writing("mk_new") as session:
            if pause:
                first_inside.set()
                let_first_write.wait(timeout=10)
            upsert_link(session, api_link("mk_new"), customer_id=None, now=T0, source="sync")

    first = threading.Thread(target=store_the_link, kwargs={"pause": True})
    second = threading.Thread(target=store_the_link, kwargs={"pause": False})
    first.start()
    assert first_inside.wait(timeout=10)
    second.start()
    # Unordered, the second writer would read "not stored" and finish before the first writes;
    # it must instead wait its turn behind the first one's transaction.
    second.join(timeout=0.5)
    assert second.is_alive()
    let_first_write.set()
    first.join(timeout=10)
    second.join(timeout=10)
    shown = seeded.totals.ready_health_summary(max_age=3600)
    assert shown is not None and shown.computed_at == counted.computed_at  # moved, not recounted
    assert shown.total == counted.total + 1
    assert shown.counts[Health.HEALTHY] == counted.counts[Health.HEALTHY] + 1


def test_list_customers(seeded: LinkQueries):
    rows = seeded.list_customers("cust_000")
    assert [(c.customer_id, c.link_count, c.needs_relink) for c in rows] == [
        ("cust_0001", 2, 1),
        ("cust_0002", 1, 1),
    ]
    assert [c.customer_id for c in seeded.list_customers(limit=2)] == ["cust_0001", "cust_0002"]


@pytest.mark.parametrize(
    "cursor", ["garbage", "", "eyJzIjoibGlua19pZCIsImsiOlsxXX0", "eyJzIjoieCJ9"]
)
def test_bad_cursors_are_refused(seeded: LinkQueries, cursor: str):
    if not cursor:
        assert seeded.list_links(after=cursor).rows  # empty cursor means first page
        return
    with pytest.raises(InvalidCursor):
        seeded.list_links(after=cursor, sort=LinkSort.LINK_ID)


def test_cursor_of_one_sort_is_refused_by_another(seeded: LinkQueries):
    page = seeded.list_links(limit=2, sort=LinkSort.LINK_ID)
    assert page.next_cursor
    with pytest.raises(InvalidCursor):
        seeded.list_links(limit=2, after=page.next_cursor, sort=LinkSort.INSTITUTION)


def test_pages_are_fetched_with_a_bounded_query(seeded: LinkQueries, store: Store):
    """A page asks the database for limit + 1 rows, never for the whole table or an OFFSET."""
    statements: list[tuple[str, Any]] = []
    # The shared counts a page plans with, as the Links page has them (else their computation
    # starts in the background during the test and its SELECT is recorded too).
    seeded.totals.health_summary()

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        first = seeded.list_links(limit=2)
        seeded.list_links(limit=2, after=first.next_cursor)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    selects = [(s, p) for s, p in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2
    for statement, parameters in selects:
        if store.dialect == "sqlite":
            # SQLite's compiler always writes "LIMIT ? OFFSET ?"; the offset must stay 0.
            assert statement.upper().rstrip().endswith("LIMIT ? OFFSET ?")
            assert tuple(parameters[-2:]) == (3, 0)
        else:
            assert "OFFSET" not in statement.upper()
            limit = statement.upper().rstrip().rsplit("LIMIT", 1)[1]
            assert parameters[limit.strip().removeprefix("%(").split(")", 1)[0].lower()] == 3


# -- keyset pagination property ---------------------------------------------------------------

NAMES = ["Alpha", "alpha", "Beta", "Zeta Bank", "Ä Bank"]
STATES = [
    ("connected", None),
    ("error", "auth_expired"),
    ("error", "system_error"),
    ("deleted", None),
    ("connecting", None),
]

link_specs = st.lists(
    st.tuples(
        st.integers(0, len(NAMES) - 1),  # institution
        st.integers(0, len(STATES) - 1),
        st.one_of(st.none(), st.sampled_from(["c_1", "c_2", "c_10", "C_3"])),
        st.integers(0, 5),  # minute of update: many ties on purpose
    ),
    min_size=0,
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=link_specs,
    sort=st.sampled_from(list(LinkSort)),
    page_size=st.integers(1, 7),
    state_filter=st.sampled_from([None, "error", "connected"]),
)
def test_keyset_pages_cover_every_row_exactly_once(
    module_database, specs, sort, page_size, state_filter
):
    if module_database == "sqlite://":
        engine = create_engine(module_database)
        Base.metadata.create_all(engine)
    else:
        empty_all_tables(module_database)
        engine = create_engine(module_database)
    store = Store(engine)
    rows: list[dict[str, Any]] = []
    for i, (inst, state_index, customer, minute) in enumerate(specs):
        state, error = STATES[state_index]
        updated = T0 + timedelta(minutes=minute)
        link = api_link(
            f"mk_{i:03d}",
            institution_id=f"inst_{inst}",
            institution_name=NAMES[inst],
            state=state,
            error_code=error,
        )
        with store.write() as session:
            upsert_link(session, link, customer_id=customer, now=updated, source="sync")
        rows.append(
            {
                "id": link.link_id,
                "name": NAMES[inst],
                "state": state,
                "error": error,
                "customer": customer,
                "updated": updated,
            }
        )

    queries = LinkQueries(store)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = queries.list_links(
            LinkFilters(state=state_filter), limit=page_size, after=cursor, sort=sort
        )
        assert len(page.rows) <= page_size
        seen.extend(r.link_id for r in page.rows)
        pages += 1
        assert pages <= len(rows) + 2, "pagination does not terminate"
        if page.next_cursor is None:
            break
        assert len(page.rows) == page_size
        cursor = page.next_cursor

    wanted = [r for r in rows if state_filter is None or r["state"] == state_filter]
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(seen) == {r["id"] for r in wanted}  # nothing missed
    reverse = sort is LinkSort.UPDATED_DESC
    expected = [
        r["id"] for r in sorted(wanted, key=lambda r: listed_order_key(sort, r), reverse=reverse)
    ]
    assert seen == expected
    store.dispose()


def test_sqlite_version_supports_what_we_use():
    # ON CONFLICT (3.24) and UPDATE … RETURNING (3.35: a session ended by a conditional UPDATE
    # tells its funnel bucket) are what the store relies on.
    assert sqlite3.sqlite_version_info >= (3, 35)


def test_the_orm_refuses_to_change_or_remove_audit_entries(store: Store):
    from linkdesk.store.models import AuditLogIsAppendOnly

    with store.write() as session:
        session.add(AuditEntry(at=T0, actor="a", action="x", outcome="ok", role="admin"))
    with pytest.raises(AuditLogIsAppendOnly), store.write() as session:
        entry = session.scalars(sa.select(AuditEntry)).one()
        entry.outcome = "rewritten"
    with pytest.raises(AuditLogIsAppendOnly), store.write() as session:
        session.delete(session.scalars(sa.select(AuditEntry)).one())
    with store.read() as session:
        assert session.scalars(sa.select(AuditEntry.outcome)).all() == ["ok"]


def test_migration_0002_keeps_data_and_the_append_only_triggers(empty_database_url: str):
    url = empty_database_url
    migrate(url, "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO audit_log (at, actor, action, outcome) "
                "VALUES ('2025-01-01 00:00:00', 'a', 'x', 'ok')"
            )
            conn.exec_driver_sql(
                "INSERT INTO webhook_deliveries (delivery_token, received_at, verdict) "
                "VALUES ('dt-1', '2025-01-01 00:00:00', 'accepted')"
            )
        migrate(url)
        with engine.begin() as conn:
            # Attempts of one delivery may now repeat the token.
            conn.exec_driver_sql(
                "INSERT INTO webhook_deliveries (delivery_token, received_at, verdict, attempt) "
                "VALUES ('dt-1', '2025-01-01 00:00:01', 'duplicate', 2)"
            )
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql("UPDATE audit_log SET actor = 'b'")
        downgrade(url, "0001")
        with engine.connect() as conn:
            tokens = conn.exec_driver_sql("SELECT delivery_token FROM webhook_deliveries").all()
            assert [t for (t,) in tokens] == ["dt-1"]
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM audit_log")
    finally:
        engine.dispose()
    migrate(url)
