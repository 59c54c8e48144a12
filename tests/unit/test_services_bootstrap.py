"""build_services: the one wiring point works with injected parts and with its own defaults."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from linkdesk.bootstrap import build_services
from linkdesk.settings import Settings
from linkdesk.store import create_engine

if TYPE_CHECKING:
    from tests.unit.conftest import FakeMoneyKit


def test_build_with_in_memory_engine_and_fake_moneykit(fake_moneykit: FakeMoneyKit):
    fake_moneykit.add_link("mk_1", tags=["customer:cust_0001"])
    engine = create_engine("sqlite://")
    http = fake_moneykit.http_client()
    fixed = datetime(2030, 5, 1, tzinfo=UTC)
    services = build_services(
        Settings(moneykit_base_url="http://moneykit.test", sync_concurrency=3),
        engine=engine,
        http_client=http,
        clock=lambda: fixed,
    )
    try:
        report = services.discovery.sync_all()
        assert report.ok == 1
        (row,) = services.links.list_links().rows
        assert row.updated_at == fixed  # the injected clock drives the stored timestamps
        assert services.audit.entries()[0].at == fixed
    finally:
        services.close()
    assert not http.is_closed  # injected parts belong to the caller
    http.close()
    engine.dispose()


def test_build_with_defaults_creates_the_database_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    services = build_services()
    try:
        assert (tmp_path / "var" / "linkdesk.db").exists()
        assert services.links.count_links() == 0
        assert services.client.base_url == services.settings.moneykit_base_url
    finally:
        services.close()
