"""The one place where Linkdesk's parts are put together.

Production (``dashboard.py`` under ``st.cache_resource``, the CLI) and tests call the same
``build_services``; tests pass fakes or in-memory parts. Every default is built inside the function,
so importing this module has no side effects.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from sqlalchemy.engine import Engine

from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.services.audit import AuditLog
from linkdesk.services.connect import ConnectService
from linkdesk.services.discovery import DiscoveryService
from linkdesk.services.ratelimit import RateLimiter
from linkdesk.settings import Settings
from linkdesk.store.engine import Store, create_engine, migrate, sqlite_file_path
from linkdesk.store.queries import LinkQueries

__all__ = ["Services", "build_services"]


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    client: MoneyKitClient
    links: LinkQueries
    sessions: ConnectService
    discovery: DiscoveryService
    audit: AuditLog
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Release what ``build_services`` created itself (not what the caller passed in)."""
        for closer in reversed(self._closers):
            closer()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build_services(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    http_client: httpx.Client | None = None,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
    client: MoneyKitClient | None = None,
    migrate_schema: bool = True,
) -> Services:
    """Build settings, store, MoneyKit client and services.

    ``clock`` returns an aware UTC datetime and drives every timestamp, including the client's
    token expiry. ``migrate_schema`` brings the database to the latest migration (a no-op when it
    is current).
    """
    settings = settings if settings is not None else Settings()
    clock = clock or _utcnow
    closers: list[Callable[[], None]] = []

    if engine is None:
        path = sqlite_file_path(settings.database_url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.database_url)
        closers.append(engine.dispose)
    if migrate_schema:
        migrate(engine)
    store = Store(engine)

    if client is None:
        client = MoneyKitClient(
            client_id=settings.moneykit_client_id,
            client_secret=settings.moneykit_client_secret,
            base_url=settings.moneykit_base_url,
            http_client=http_client,
            max_retries=settings.moneykit_max_retries,
            timeout=settings.moneykit_timeout_seconds if http_client is None else None,
            clock=lambda: clock().timestamp(),
            sleep=sleep,
        )
        closers.append(client.close)

    audit = AuditLog(store, clock=clock)
    return Services(
        settings=settings,
        store=store,
        client=client,
        links=LinkQueries(store),
        sessions=ConnectService(
            store=store, client=client, settings=settings, audit=audit, clock=clock
        ),
        discovery=DiscoveryService(
            store=store,
            client=client,
            settings=settings,
            audit=audit,
            clock=clock,
            limiter=RateLimiter(settings.sync_links_per_minute, sleep=sleep or time.sleep),
        ),
        audit=audit,
        _closers=closers,
    )
