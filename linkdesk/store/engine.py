"""Engine creation, the read/write unit of work, and programmatic migrations.

SQLite is the embedded default. Several Streamlit sessions and the sync worker write at once, so:

* WAL lets readers run while one writer writes;
* ``busy_timeout`` makes a writer wait for the lock instead of failing at once;
* writers open their transaction with ``BEGIN IMMEDIATE``. With the default deferred ``BEGIN`` a
  transaction that reads first and writes later can fail with "database is locked" at the write,
  and busy_timeout cannot help there. Readers keep the plain ``BEGIN``.
"""

from __future__ import annotations

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

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Store",
    "create_engine",
    "downgrade",
    "migrate",
    "sqlite_file_path",
]

BUSY_TIMEOUT_MS = 10_000
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


def create_engine(url: str, *, echo: bool = False, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, busy timeout, foreign keys and writer locking.

    ``sqlite://`` (in-memory) shares one connection across threads so that every session of a
    test sees the same database.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, echo=echo, pool_pre_ping=True, **kwargs)

    in_memory = sqlite_file_path(parsed) is None
    connect_args: dict[str, Any] = {"check_same_thread": False}
    connect_args.update(kwargs.pop("connect_args", {}))
    if in_memory:
        kwargs.setdefault("poolclass", StaticPool)
    else:
        connect_args.setdefault("timeout", BUSY_TIMEOUT_MS / 1000)
    engine = sa.create_engine(url, echo=echo, connect_args=connect_args, **kwargs)
    _install_sqlite_events(engine, wal=not in_memory)
    return engine


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
        self._turn: threading.RLock | None = threading.RLock() if self.single_connection else None
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

    def dispose(self) -> None:
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
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)
        connection.commit()
