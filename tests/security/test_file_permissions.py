"""Files holding secrets or customer data are created readable by their owner only (0600)."""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from linkdesk.bootstrap import build_services
from linkdesk.services.customer_links import load_signing_key
from linkdesk.settings import Settings
from linkdesk.store.engine import create_engine

ROOT = Path(__file__).resolve().parents[2]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    # The usual default umask: without care, new files come out 0644 (world-readable).
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def run_local() -> object:
    spec = importlib.util.spec_from_file_location("run_local", ROOT / "scripts" / "run_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_sqlite_database_and_its_wal_and_shm_files_are_owner_only(tmp_path: Path) -> None:
    database = tmp_path / "var" / "linkdesk.db"
    services = build_services(Settings(database_url=f"sqlite:///{database}"))
    try:
        with services.store.write() as session:
            session.execute(sa.text("CREATE TABLE IF NOT EXISTS probe (x int)"))
            session.execute(sa.text("INSERT INTO probe VALUES (1)"))
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        assert all(path.exists() for path in files)
        assert {path.name: mode(path) for path in files} == {path.name: 0o600 for path in files}
    finally:
        services.close()


def test_a_world_readable_database_from_an_older_version_is_tightened(tmp_path: Path) -> None:
    database = tmp_path / "linkdesk.db"
    engine = create_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x int)")
    engine.dispose()
    for path in tmp_path.iterdir():
        path.chmod(0o644)
    create_engine(f"sqlite:///{database}").dispose()
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        p.name: 0o600 for p in tmp_path.iterdir()
    }


def test_the_generated_signing_key_is_owner_only(tmp_path: Path) -> None:
    key_file = tmp_path / "signing.key"
    load_signing_key(Settings(signing_key_file=str(key_file)))
    assert mode(key_file) == 0o600


def test_run_local_creates_the_secrets_file_owner_only(tmp_path: Path) -> None:
    module = run_local()
    secrets = tmp_path / "secrets.toml"
    module.write_private(secrets, b'[auth]\nx = "y"\n')  # type: ignore[attr-defined]
    assert mode(secrets) == 0o600
    assert secrets.read_bytes() == b'[auth]\nx = "y"\n'
    with pytest.raises(FileExistsError):  # never overwrites a file someone edited
        module.write_private(secrets, b"")  # type: ignore[attr-defined]


def test_run_local_tightens_a_world_readable_secrets_file(tmp_path: Path) -> None:
    module = run_local()
    secrets = tmp_path / "secrets.toml"
    secrets.write_text("x = 1\n")
    secrets.chmod(0o644)
    module.ROOT = tmp_path  # type: ignore[attr-defined]
    module.make_private(secrets)  # type: ignore[attr-defined]
    assert mode(secrets) == 0o600
