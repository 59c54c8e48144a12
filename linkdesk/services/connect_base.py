"""What starting and finishing Connect sessions share: the service's parts and its records.

:class:`~linkdesk.services.connect.ConnectService` is one object for its callers, built from two
halves with one reason to change each: :mod:`~linkdesk.services.connect_start` (opening Connect,
the relink reservation) and :mod:`~linkdesk.services.connect_finish` (applying the component's
log and acting on its end). Staff-facing text is in :mod:`~linkdesk.services.connect_text`, every
write in :mod:`linkdesk.store.connect_repository`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from linkdesk.auth import Actor, as_actor
from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.models import Link as ApiLink
from linkdesk.services.audit import AuditLog
from linkdesk.services.ingest import IngestResult, LinkIngestor
from linkdesk.services.institutions import InstitutionFetcher
from linkdesk.settings import Settings
from linkdesk.store.engine import Store
from linkdesk.store.health_totals import HealthTotals

__all__ = ["ApplyOutcome", "ConnectBase", "Outcome", "StartedSession"]

logger = logging.getLogger("linkdesk.connect")

Outcome = Literal["pending", "success", "exit", "failed"]

# How long institutions read by this service are reused (as the sync worker does).
FETCHER_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class StartedSession:
    session_id: str
    link_session_token: str = field(repr=False)
    mode: Literal["link", "relink"]
    link_id: str | None = None


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    new: int
    outcome: Outcome
    link_id: str | None
    message: str | None
    gaps: tuple[int, ...] = ()


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ConnectBase:
    def __init__(
        self,
        *,
        store: Store,
        client: MoneyKitClient,
        settings: Settings,
        audit: AuditLog,
        clock: Callable[[], datetime] | None = None,
        lease_ttl: timedelta | None = None,
        totals: HealthTotals | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._store = store
        self._sleep = sleep or time.sleep
        self._client = client
        self._settings = settings
        self._audit = audit
        self._clock = clock or _utcnow
        self._lease_ttl = lease_ttl or timedelta(minutes=settings.relink_lease_minutes)
        # The shared totals the pages show: a link this service changes is moved between its
        # counts at once (see _ingest).
        self._totals = totals or HealthTotals(store)
        self._fetcher_lock = threading.Lock()
        self._fetcher_cache: InstitutionFetcher | None = None
        self._fetcher_since = self._clock()
        # Told (mode, outcome) when a Connect session starts ("started") or ends; metrics listen.
        self.session_observers: list[Callable[[str, str], None]] = []
        self._ingestor = LinkIngestor(
            store=store,
            client=client,
            customer_tag_prefix=settings.customer_tag_prefix,
            clock=self._clock,
            totals=self._totals,
        )
        # After Done the agent waits for these reads: a rate-limited account read is skipped
        # (the sync worker reads the accounts soon after) instead of sleeping out Retry-After.
        self._completion_ingestor = LinkIngestor(
            store=store,
            client=client.with_options(max_retries=0),
            customer_tag_prefix=settings.customer_tag_prefix,
            clock=self._clock,
            totals=self._totals,
        )

    def _fetcher(self) -> InstitutionFetcher:
        """Institutions as read within the last hour: the completion of a relink finds the one
        its start has just read instead of asking MoneyKit again (they rarely change; the sync
        worker re-reads them hourly the same way)."""
        now = self._clock()
        with self._fetcher_lock:
            if self._fetcher_cache is None or now - self._fetcher_since > FETCHER_LIFETIME:
                self._fetcher_cache = InstitutionFetcher(self._client)
                self._fetcher_since = now
            return self._fetcher_cache

    def _ingest(self, link: ApiLink, *, completing: bool = False, **kwargs: Any) -> IngestResult:
        """Store what MoneyKit says of ``link``; the ingestors move it between the shared
        totals' counts, so that the numbers a staff action changed are right on the page's next
        run. ``completing``: while the agent waits after Done (see _completion_ingestor)."""
        ingestor = self._completion_ingestor if completing else self._ingestor
        return ingestor.ingest(link, **kwargs)

    def _actor(self, actor: Actor | str) -> Actor:
        return as_actor(actor, self._settings.default_role)

    def _tell_observers(self, mode: str, outcome: str) -> None:
        for observer in self.session_observers:
            try:
                observer(mode, outcome)
            except Exception:
                logger.exception("connect session observer failed")
