"""Store MoneyKit's view of one link: the link, its products, its accounts and its institution.

Products are stored as MoneyKit reports them (refreshed, last attempted, error) with what that
says about their refresh (fetched, never fetched, in progress, failed); the worst of those goes on
the link row as ``refresh_issue`` so health can read it without a join.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.errors import (
    LinkBadStateError,
    MoneyKitError,
    NotFoundError,
    PermissionDeniedError,
)
from linkdesk.moneykit.models import Account as ApiAccount
from linkdesk.moneykit.models import Link as ApiLink
from linkdesk.services.institutions import InstitutionFetcher
from linkdesk.store.contacts import remember_moneykit_email
from linkdesk.store.engine import Store
from linkdesk.store.health_totals import HealthTotals
from linkdesk.store.models import Institution
from linkdesk.store.repository import (
    LinkUpsert,
    customer_from_tags,
    replace_accounts,
    replace_products,
    upsert_institution,
    upsert_link,
)

__all__ = ["IngestResult", "LinkIngestor"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    link: ApiLink
    upsert: LinkUpsert
    customer_id: str | None
    accounts_stored: int | None  # None: accounts were not (re)read
    accounts_error: MoneyKitError | None = None


class LinkIngestor:
    def __init__(
        self,
        *,
        store: Store,
        client: MoneyKitClient,
        customer_tag_prefix: str,
        clock: Callable[[], datetime],
        totals: HealthTotals | None = None,
    ) -> None:
        """``totals``: the shared totals that follow each link this ingestor writes
        (read just around the write, after MoneyKit's answers are in, so two writers of one
        link cannot both count its move)."""
        self._totals = totals
        self._store = store
        self._client = client
        self._prefix = customer_tag_prefix
        self._clock = clock

    def _known_image_sources(self, institution_id: str) -> dict[str, str]:
        with self._store.read() as session:
            row = session.get(Institution, institution_id)
            if row is None:
                return {}
            stored = {
                slot: source
                for slot, source in (row.image_sources or {}).items()
                if getattr(row, slot, None)
            }
            return {k: v for k, v in stored.items() if isinstance(v, str)}

    def _accounts(self, link: ApiLink) -> tuple[list[ApiAccount] | None, MoneyKitError | None]:
        if link.state != "connected":
            # Data endpoints answer 422 link_error.bad_state for a broken link; keep what we have.
            return None, None
        try:
            return list(self._client.get_accounts(link.link_id).accounts), None
        except (LinkBadStateError, PermissionDeniedError, NotFoundError):
            return None, None
        except MoneyKitError as exc:
            return None, exc

    def ingest(
        self,
        link: ApiLink,
        *,
        source: str,
        fetcher: InstitutionFetcher,
        fetched_at: datetime,
        customer_id: str | None = None,
        created_at: datetime | None = None,
        read_accounts: bool = True,
    ) -> IngestResult:
        """Fetch accounts and institution for ``link`` and store everything in one transaction.

        ``read_accounts=False`` keeps the stored accounts (the caller is out of accounts budget).
        """
        customer = customer_id or customer_from_tags(link.all_tags, self._prefix)
        accounts, accounts_error = self._accounts(link) if read_accounts else (None, None)
        institution = None
        if fetcher.first_store(link.institution_id):
            institution = fetcher.data(
                link.institution_id,
                fallback_name=link.institution_name,
                fallback_avatar=link.institution_avatar,
                known_sources=self._known_image_sources(link.institution_id),
            )
        now = self._clock()
        writing = (
            self._totals.writing(link.link_id) if self._totals is not None else self._store.write()
        )
        with writing as session:
            if institution is not None:
                upsert_institution(session, institution, now)
            result = upsert_link(
                session,
                link,
                customer_id=customer,
                now=now,
                source=source,
                fetched_at=fetched_at,
                created_at=created_at,
            )
            if not result.skipped_as_older:
                replace_products(session, link, now)
            if accounts is not None and not result.skipped_as_older:
                replace_accounts(session, link.link_id, accounts, now)
            if customer and not result.skipped_as_older:
                remember_moneykit_email(session, customer, link.customer_email, now)
        return IngestResult(
            link=link,
            upsert=result,
            customer_id=customer,
            accounts_stored=len(accounts) if accounts is not None else None,
            accounts_error=accounts_error,
        )
