"""The attack catalogue reuses the core's fixtures (a fake MoneyKit behind the real client, the
store on SQLite and PostgreSQL, a webhook signer) instead of building its own."""

from tests.unit.conftest import (  # noqa: F401  (fixtures are found by name)
    core_clock,
    core_services,
    core_settings,
    fake_moneykit,
    file_store,
    memory_store,
    signer,
    store,
)
