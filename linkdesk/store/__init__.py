"""The Linkdesk store: tables, engine, unit of work, migrations and read-side queries."""

from linkdesk.store.engine import Store, create_engine, downgrade, migrate, sqlite_file_path

__all__ = ["Store", "create_engine", "downgrade", "migrate", "sqlite_file_path"]
