"""Fixtures that run database tests on both backends the store supports.

``database_url`` is parametrized ``sqlite`` / ``postgres``: a test that asks for it (directly or
through a fixture built on it) runs once per backend. The PostgreSQL runs use a local server
named by ``LINKDESK_TEST_POSTGRES_URL`` (``make test`` starts one with ``scripts/postgres.sh``
and sets it); without it they are skipped with the reason shown. Each test module gets its own
freshly migrated database, emptied before every test, and dropped when the module is done.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from linkdesk.store.engine import create_engine, migrate
from linkdesk.store.shared import wait_for_refreshes

POSTGRES_ENV = "LINKDESK_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgres")
_NO_POSTGRES = (
    f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+psycopg://linkdesk@localhost:55432/"
    "postgres); `make test` starts a local server with scripts/postgres.sh and sets it"
)
# Tables never emptied between tests: the schema version must survive.
_KEEP_TABLES = {"alembic_version"}


def postgres_server_url() -> str | None:
    value = os.environ.get(POSTGRES_ENV, "").strip()
    return value or None


class PostgresDatabases:
    """Creates and drops throwaway databases on the test server."""

    def __init__(self, server_url: str) -> None:
        self.server_url = make_url(server_url)
        # AUTOCOMMIT: CREATE/DROP DATABASE cannot run inside a transaction.
        self._admin = sa.create_engine(
            self.server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT"
        )

    def check(self) -> None:
        with self._admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def create(self, label: str = "t") -> str:
        safe = "".join(ch if ch.isalnum() else "_" for ch in label.lower())[:30]
        name = f"linkdesk_{safe}_{uuid.uuid4().hex[:10]}"
        with self._admin.connect() as connection:
            # Byte-order collation, as SQLite compares text, so sort orders match across
            # backends whatever the server's default locale is.
            connection.exec_driver_sql(
                f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C'"
            )
        return self.server_url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self._admin.connect() as connection:
            # FORCE: a test that failed may have left a connection open.
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def dispose(self) -> None:
        self._admin.dispose()


def empty_all_tables(url: str) -> None:
    """Remove every row (schema kept), so each test starts from an empty store.

    TRUNCATE does not fire the audit log's row triggers, which refuse DELETE on purpose. A count
    the previous test left computing in the background is let finish first, or it would store
    its summary into this test's empty store.
    """
    wait_for_refreshes()
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            # A connection a test forgot to close must fail the next test, not hang it.
            connection.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            names = [
                name
                for name in sa.inspect(connection).get_table_names()
                if name not in _KEEP_TABLES
            ]
            if names:
                tables = ", ".join(f'"{name}"' for name in names)
                connection.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    url = postgres_server_url()
    if url is None:
        pytest.skip(_NO_POSTGRES)
    databases = PostgresDatabases(url)
    # Set but unreachable is a broken set-up, not a reason to skip quietly.
    databases.check()
    yield databases
    databases.dispose()


@pytest.fixture(scope="module")
def postgres_module_url(
    postgres_databases: PostgresDatabases, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A database for this test module, migrated to head."""
    url = postgres_databases.create(request.module.__name__.rsplit(".", 1)[-1])
    migrate(url)
    yield url
    postgres_databases.drop(url)


@pytest.fixture(scope="module", params=BACKENDS)
def module_database(request: pytest.FixtureRequest) -> str:
    """One database per test module and backend (Hypothesis reuses it across examples):
    ``sqlite://`` (the test creates its tables) or a migrated PostgreSQL URL."""
    if request.param == "sqlite":
        return "sqlite://"
    url: str = request.getfixturevalue("postgres_module_url")
    return url


def listed_order_key(sort: str, row: dict[str, Any]) -> tuple[Any, ...]:
    """The Links page's order for ``sort`` (a LinkSort value) over plain rows (id, name, state,
    error, customer, updated): what the tests expect pages to follow."""
    return {
        "updated_desc": (row["updated"], row["id"]),
        "updated_asc": (row["updated"], row["id"]),
        "link_id": (row["id"],),
        "institution": (row["name"], row["id"]),
        "customer": (row["customer"] or "", row["id"]),
        "state": (row["state"], row["error"] or "", row["id"]),
    }[sort]


@pytest.fixture
def fresh_postgres_url(postgres_databases: PostgresDatabases) -> Iterator[str]:
    """An empty database (no schema) for tests of the migrations themselves."""
    url = postgres_databases.create("fresh")
    yield url
    postgres_databases.drop(url)


@pytest.fixture(params=BACKENDS)
def database_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def database_url(
    database_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    """URL of an empty store on the backend of this run.

    SQLite: a file that does not exist yet (the first migration creates it). PostgreSQL: the
    module's migrated database, emptied.
    """
    if database_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'linkdesk.db'}"
        return
    url = request.getfixturevalue("postgres_module_url")
    empty_all_tables(url)
    yield url


@pytest.fixture
def empty_database_url(
    database_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> str:
    """URL of a database without any schema, on the backend of this run."""
    if database_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@pytest.fixture
def make_engine() -> Iterator[Callable[[str], sa.Engine]]:
    """``create_engine`` whose engines are disposed after the test."""
    engines: list[sa.Engine] = []

    def make(url: str) -> sa.Engine:
        engine = create_engine(url)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
