"""A link's data, a user's links and data, and test webhooks.

Linkdesk itself reads none of these (it reads links and their accounts); they are kept because
the contract suite (tests/contract/test_client_contract.py) calls each through this client
against the sandbox and, with credentials, the real MoneyKit: that is how the sandbox is shown to
answer our client as MoneyKit does for every operation it emulates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

from linkdesk.moneykit.errors import (
    APIResponseValidationError,
)
from linkdesk.moneykit.models import (
    AccountNumbersResponse,
    AccountResponse,
    EnrichmentCorrection,
    HoldingsResponse,
    IdentityResponse,
    InvestmentTransactionsPage,
    TransactionsPage,
    TransactionSyncPage,
    UserAccounts,
    UserLinks,
    UserTransactionsPage,
    WebhookTestResult,
)
from linkdesk.moneykit.transport import (
    DEFAULT_SYNC_SIZE,
    SYNC_SIZE_MAX,
    Transport,
    _ids,
    _paging,
    _quote,
    _Retry,
)

__all__ = ["LinkDataAPI"]


class LinkDataAPI(Transport):
    # -- link data ---------------------------------------------------------------------------

    def get_account(self, link_id: str, account_id: str) -> AccountResponse:
        path = f"/links/{_quote(link_id)}/accounts/{_quote(account_id)}"
        return self._parse(self._send("GET", path), AccountResponse)

    def get_account_numbers(self, link_id: str) -> AccountNumbersResponse:
        return self._parse(
            self._send("GET", f"/links/{_quote(link_id)}/accounts/numbers"),
            AccountNumbersResponse,
        )

    def get_identities(
        self, link_id: str, account_ids: Sequence[str] | None = None
    ) -> IdentityResponse:
        response = self._send(
            "GET", f"/links/{_quote(link_id)}/identity", params={"account_ids": _ids(account_ids)}
        )
        return self._parse(response, IdentityResponse)

    def get_transactions(
        self,
        link_id: str,
        *,
        page: int | None = None,
        size: int | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        account_ids: Sequence[str] | None = None,
    ) -> TransactionsPage:
        """``GET /links/{id}/transactions``: one page, newest first (MoneyKit's defaults: page 1,
        50 rows, the 90 days up to today)."""
        params = _paging(page, size, start_date, end_date)
        params["account_ids"] = _ids(account_ids)
        response = self._send("GET", f"/links/{_quote(link_id)}/transactions", params=params)
        return self._parse(response, TransactionsPage)

    def sync_transactions(
        self, link_id: str, cursor: str | None = None, size: int = DEFAULT_SYNC_SIZE
    ) -> TransactionSyncPage:
        """One page of ``GET /links/{id}/transactions/sync``; no cursor replays the history."""
        if not 1 <= size <= SYNC_SIZE_MAX:
            raise ValueError(f"size must be between 1 and {SYNC_SIZE_MAX}.")
        response = self._send(
            "GET",
            f"/links/{_quote(link_id)}/transactions/sync",
            params={"cursor": cursor or None, "size": size},
        )
        return self._parse(response, TransactionSyncPage)

    def iter_transactions_sync(
        self, link_id: str, *, cursor: str | None = None, size: int = DEFAULT_SYNC_SIZE
    ) -> Iterator[TransactionSyncPage]:
        """Pages of changes since ``cursor``, following ``cursor.next`` while ``has_more``.

        Store the last page's ``next_cursor`` only after its changes are saved: it is the point
        the next sync starts from.
        """
        seen: set[str] = set()
        while True:
            page = self.sync_transactions(link_id, cursor, size)
            yield page
            if not page.has_more:
                return
            next_cursor = page.next_cursor
            # Without a fresh cursor the loop would fetch the same page forever.
            if next_cursor is None or next_cursor == cursor or next_cursor in seen:
                raise APIResponseValidationError(
                    "MoneyKit said more transactions follow but did not advance the cursor."
                )
            seen.add(next_cursor)
            cursor = next_cursor

    def correct_enrichment(
        self,
        link_id: str,
        transaction_id: str,
        category: str,
        subcategory: str | None = None,
    ) -> EnrichmentCorrection:
        """``POST /links/{id}/transactions/{txn_id}/enrichment``: set the transaction's category.

        Retried like a write that sets a value: repeating it sets the same category again.
        """
        body: dict[str, Any] = {"category": category}
        if subcategory is not None:
            body["subcategory"] = subcategory
        path = f"/links/{_quote(link_id)}/transactions/{_quote(transaction_id)}/enrichment"
        return self._parse(self._send("POST", path, json=body), EnrichmentCorrection)

    def get_holdings(
        self, link_id: str, account_ids: Sequence[str] | None = None
    ) -> HoldingsResponse:
        response = self._send(
            "GET",
            f"/links/{_quote(link_id)}/investments/holdings",
            params={"account_ids": _ids(account_ids)},
        )
        return self._parse(response, HoldingsResponse)

    def get_investment_transactions(
        self,
        link_id: str,
        *,
        page: int | None = None,
        size: int | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        account_ids: Sequence[str] | None = None,
    ) -> InvestmentTransactionsPage:
        params = _paging(page, size, start_date, end_date)
        params["account_ids"] = _ids(account_ids)
        response = self._send(
            "GET", f"/links/{_quote(link_id)}/investments/transactions", params=params
        )
        return self._parse(response, InvestmentTransactionsPage)

    # -- users (``user_id`` is our customer_user.id) -------------------------------------------

    def get_user_links(self, user_id: str) -> UserLinks:
        return self._parse(self._send("GET", f"/users/{_quote(user_id)}/links"), UserLinks)

    def get_user_accounts(
        self, user_id: str, account_ids: Sequence[str] | None = None
    ) -> UserAccounts:
        response = self._send(
            "GET", f"/users/{_quote(user_id)}/accounts", params={"account_ids": _ids(account_ids)}
        )
        return self._parse(response, UserAccounts)

    def get_user_transactions(
        self,
        user_id: str,
        *,
        page: int | None = None,
        size: int | None = None,
        start_date: date | None = None,
        end_date: date | None = None,
        account_ids: Sequence[str] | None = None,
    ) -> UserTransactionsPage:
        params = _paging(page, size, start_date, end_date)
        # This endpoint spells its filter in the singular.
        params["account_id"] = _ids(account_ids)
        response = self._send("GET", f"/users/{_quote(user_id)}/transactions", params=params)
        return self._parse(response, UserTransactionsPage)

    # -- webhooks ----------------------------------------------------------------------------

    def trigger_test_webhook(
        self, link_id: str, *, webhook_event: str, idempotency_key: str
    ) -> WebhookTestResult:
        """``POST /webhooks/test/link/{id}`` (sandbox links): deliver a fake event to the link's
        webhook carrying ``idempotency_key``.

        Not retried once MoneyKit may have seen it, so a test sends exactly one event.
        """
        response = self._send(
            "POST",
            f"/webhooks/test/link/{_quote(link_id)}",
            json={"webhook_event": webhook_event, "webhook_idempotency_key": idempotency_key},
            retry=_Retry.UNSENT_ONLY,
        )
        return self._parse(response, WebhookTestResult)
