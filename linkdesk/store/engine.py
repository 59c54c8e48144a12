"""Engine creation, the read/write unit of work, and programmatic migrations.

SQLite is the embedded default; PostgreSQL (``postgresql+psycopg://…``) is the way to run several
dashboard processes and workers on one database. Both run the same migrations and code; where
they differ (row locks with ``SKIP LOCKED``, ``GREATEST``) the services ask ``Store.dialect``.

Several Streamlit sessions and the sync worker write at once, so on SQLite:

* WAL lets readers run while one writer writes;
* ``busy_timeout`` makes a writer wait for the lock instead of failing at once;
* writers open their transaction with ``BEGIN IMMEDIATE``. With the default deferred ``BEGIN`` a
  transaction that reads first and writes later can fail with "database is locked" at the write,
  and busy_timeout cannot help there. Readers keep the plain ``BEGIN``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from linkdesk.store.shared import wait_for_refreshes

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Store",
    "create_engine",
    "database_url",
    "downgrade",
    "migrate",
    "sqlite_file_path",
]

logger = logging.getLogger("linkdesk.store")

BUSY_TIMEOUT_MS = 10_000
# The database holds customers, links and the audit log: readable by its owner only.
PRIVATE_FILE_MODE = 0o600
POSTGRES_DRIVER = "psycopg"
POSTGRES_POOL_SIZE = 5
POSTGRES_MAX_OVERFLOW = 10
POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
# Advisory lock id that serialises migrations across processes ("linkdesk" in ASCII, truncated).
MIGRATION_LOCK_KEY = 0x6C696E6B6465736B
_WRITER_OPTION = "linkdesk_writer"
_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def sqlite_file_path(url: str | sa.URL) -> Path | None:
    """The database file of a SQLite URL, or None for other backends and in-memory SQLite."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database)


def database_url(url: str | sa.URL) -> sa.URL:
    """``url`` parsed, with PostgreSQL URLs pointed at the psycopg 3 driver.

    Platforms hand out ``postgres://`` or ``postgresql://`` URLs, which SQLAlchemy would map to
    psycopg2; only psycopg (3) is installed.
    """
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername=f"postgresql+{POSTGRES_DRIVER}")
    return parsed


def create_engine(url: str | sa.URL, *, echo: bool = False, **kwargs: Any) -> Engine:
    """An engine for ``url``: SQLite (WAL, busy timeout, foreign keys, writer locking) or
    PostgreSQL (a bounded, pre-pinged connection pool).

    ``sqlite://`` (in-memory) shares one connection across threads so that every session of a
    test sees the same database.
    """
    parsed = database_url(url)
    # The services decide races by the row count of a conditional INSERT/UPDATE ("did I win?").
    # SQLAlchemy only guarantees rowcount for UPDATE/DELETE unless asked to keep it.
    options = {"preserve_rowcount": True, **kwargs.pop("execution_options", {})}
    if parsed.get_backend_name() == "postgresql":
        return _create_postgres_engine(parsed, echo=echo, execution_options=options, **kwargs)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(
            parsed, echo=echo, pool_pre_ping=True, execution_options=options, **kwargs
        )

    file_path = sqlite_file_path(parsed)
    in_memory = file_path is None
    if file_path is not None:
        make_private(file_path)
    connect_args: dict[str, Any] = {"check_same_thread": False}
    connect_args.update(kwargs.pop("connect_args", {}))
    if in_memory:
        kwargs.setdefault("poolclass", _SharedConnectionPool)
    else:
        connect_args.setdefault("timeout", BUSY_TIMEOUT_MS / 1000)
    engine = sa.create_engine(
        parsed, echo=echo, connect_args=connect_args, execution_options=options, **kwargs
    )
    _install_sqlite_events(engine, wal=not in_memory)
    return engine


def make_private(database: Path) -> None:
    """Create the SQLite file owner-only (0600) before SQLite does, and tighten old ones.

    SQLite creates a new database file with the process umask (typically 0644, world-readable)
    and gives its ``-wal`` and ``-shm`` files the database file's permissions, so creating the
    file first with 0600 keeps all three private. Files left readable by an earlier version are
    tightened; a file owned by someone else is left alone with a warning.
    """
    if database.parent.is_dir():
        try:
            fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:
            pass
        else:
            os.close(fd)  # an empty file is a valid new SQLite database
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        try:
            if path.stat().st_mode & 0o077:
                path.chmod(PRIVATE_FILE_MODE)
        except FileNotFoundError:
            continue
        except PermissionError:
            logger.warning("%s is readable by other users and could not be made private", path)


class _SharedConnectionPool(StaticPool):
    """In-memory SQLite's one connection, with the lock that sessions take turns on (see
    :class:`Store`): closing the connection takes its turn too, so a background count still
    running when a test disposes the engine finishes first instead of crashing the process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.turn = threading.RLock()

    def dispose(self) -> None:
        with self.turn:
            super().dispose()

    def recreate(self) -> StaticPool:
        fresh = super().recreate()
        if isinstance(fresh, _SharedConnectionPool):
            fresh.turn = self.turn
        return fresh


def _create_postgres_engine(url: sa.URL, *, echo: bool, **kwargs: Any) -> Engine:
    # Each process (dashboard replica or worker) holds its own pool, so the server's
    # max_connections must cover (pool_size + max_overflow) x processes. A worker uses
    # about sync_concurrency + 2 connections; a dashboard one per active page run.
    kwargs.setdefault("pool_size", POSTGRES_POOL_SIZE)
    kwargs.setdefault("max_overflow", POSTGRES_MAX_OVERFLOW)
    # Wait this long for a free connection, then fail the request instead of hanging the page.
    kwargs.setdefault("pool_timeout", 30)
    # Connections are renewed before a proxy or the server drops them as idle.
    kwargs.setdefault("pool_recycle", 1800)
    # A server restart or failover leaves dead connections in the pool; checking on checkout
    # (one round trip) turns them into a reconnect instead of a failed page or job.
    kwargs.setdefault("pool_pre_ping", True)
    connect_args: dict[str, Any] = {
        "connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS,
        # Shown in pg_stat_activity, so an operator can tell Linkdesk's connections apart.
        "application_name": "linkdesk",
    }
    connect_args.update(kwargs.pop("connect_args", {}))
    return sa.create_engine(url, echo=echo, connect_args=connect_args, **kwargs)


def _install_sqlite_events(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below; pysqlite's own implicit
        # BEGIN cannot be told to take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        writer = connection.get_execution_options().get(_WRITER_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


class Store:
    """The store's engine and its two kinds of unit of work.

    ``read()`` is for queries; ``write()`` commits when the block ends normally and rolls back on
    any exception, so forgetting to commit never half-applies a change.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # In-memory SQLite runs on one shared connection; sessions from several threads must then
        # take turns, or their transactions would interleave on that connection.
        self.single_connection = isinstance(engine.pool, StaticPool)
        self._turn: threading.RLock | None = None
        if self.single_connection:
            self._turn = getattr(engine.pool, "turn", None) or threading.RLock()
        self._reader = sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._writer = sessionmaker(
            engine.execution_options(**{_WRITER_OPTION: True}),
            expire_on_commit=False,
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _taking_turns(self) -> Iterator[None]:
        if self._turn is None:
            yield
            return
        with self._turn:
            yield

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._taking_turns():
            session = self._reader()
            try:
                yield session
            finally:
                # close() ends the transaction and detaches objects with their loaded values
                # (a rollback() would expire them first and make them unreadable afterwards).
                session.close()

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._taking_turns():
            session = self._writer()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    def ping(self) -> bool:
        """Whether the database answers: one trivial statement, the same cost at any size."""
        with self.read() as session:
            return session.execute(sa.text("SELECT 1")).scalar_one() == 1

    def dispose(self) -> None:
        # A shared count still being computed in the background would lose its connection (on
        # in-memory SQLite, the one connection) mid-statement.
        wait_for_refreshes()
        self.engine.dispose()


def _alembic_config(url: str | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser treats % as interpolation; URLs may contain escaped characters.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` (``alembic upgrade head`` by default).

    Given a URL of a SQLite file, the file's folder is created first (``var/`` by default).
    """
    _run_alembic(engine_or_url, "upgrade", revision)


def downgrade(engine_or_url: Engine | str, revision: str) -> None:
    """Downgrade the schema to ``revision`` (``"base"`` removes every table)."""
    _run_alembic(engine_or_url, "downgrade", revision)


def _run_alembic(engine_or_url: Engine | str, direction: str, revision: str) -> None:
    if isinstance(engine_or_url, str):
        path = sqlite_file_path(engine_or_url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(engine_or_url)
        try:
            _run_with(engine, direction, revision)
        finally:
            engine.dispose()
    else:
        _run_with(engine_or_url, direction, revision)


def _run_with(engine: Engine, direction: str, revision: str) -> None:
    from alembic import command

    config = _alembic_config()
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Replicas starting together each run the migrations: the first to take this lock
            # migrates, the others wait for its commit and then find the schema current. The
            # lock belongs to this transaction, so a crashed migrator cannot leave it held.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)
        connection.commit()
