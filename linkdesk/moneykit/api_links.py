"""Link sessions, the token exchange, and links: what Linkdesk calls in production."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from linkdesk.moneykit.errors import (
    APIResponseValidationError,
)
from linkdesk.moneykit.models import (
    AccountsResponse,
    ExchangeResult,
    ImportAccount,
    ImportTransaction,
    Link,
    LinkListItem,
    LinkListPage,
    LinkSession,
)
from linkdesk.moneykit.transport import (
    LINKS_PAGE_MAX,
    LINKS_PAGE_MIN,
    UNSET,
    Transport,
    Unset,
    _quote,
    _Retry,
)

__all__ = ["LinksAPI"]


class LinksAPI(Transport):
    # -- link sessions -----------------------------------------------------------------------

    def create_link_session(
        self,
        *,
        customer_user_id: str,
        redirect_uri: str,
        existing_link_id: str | None = None,
        webhook: str | None = None,
        link_tags: Sequence[str] | None = None,
        institution_id: str | None = None,
        products: Sequence[str] | None = None,
        prefetch: bool = False,
        custom_sandbox_data: Mapping[str, Any] | None = None,
    ) -> LinkSession:
        """``POST /link-session``. With ``existing_link_id`` the session repairs that link.

        ``products`` are asked for beside accounts; with ``prefetch`` MoneyKit fetches them right
        after the exchange instead of on the first refresh. ``custom_sandbox_data`` (sandbox keys
        only) sets the accounts and owners the link returns.
        Retried only when MoneyKit cannot have created the session (429, no connection): a
        repeated request would leave a second session behind.
        """
        if not 4 <= len(customer_user_id) <= 150:
            raise ValueError("customer_user_id must be 4 to 150 characters long.")
        body: dict[str, Any] = {
            "customer_user": {"id": customer_user_id},
            "redirect_uri": redirect_uri,
        }
        if existing_link_id is not None:
            body["existing_link_id"] = existing_link_id
        if webhook:
            body["webhook"] = webhook
        if link_tags is not None:
            body["link_tags"] = list(link_tags)
        if institution_id is not None:
            body["institution_id"] = institution_id
        if products:
            settings = {"prefetch": True} if prefetch else {}
            body["settings"] = {"products": {name: dict(settings) for name in products}}
        if custom_sandbox_data is not None:
            body["custom_sandbox_data"] = dict(custom_sandbox_data)
        response = self._send("POST", "/link-session", json=body, retry=_Retry.UNSENT_ONLY)
        return self._parse(response, LinkSession)

    def exchange_token(self, exchangeable_token: str) -> ExchangeResult:
        """``POST /link-session/exchange-token``.

        Never repeated once MoneyKit may have seen it: a second exchange of the same token fails,
        so an ambiguous failure is reported instead of retried.
        """
        response = self._send(
            "POST",
            "/link-session/exchange-token",
            json={"exchangeable_token": exchangeable_token},
            retry=_Retry.UNSENT_ONLY,
        )
        return self._parse(response, ExchangeResult)

    # -- links -------------------------------------------------------------------------------

    def get_link(self, link_id: str) -> Link:
        return self._parse(self._send("GET", f"/links/{_quote(link_id)}"), Link)

    def list_links(self, *, cursor: str | None = None, limit: int = LINKS_PAGE_MIN) -> LinkListPage:
        """One page of ``GET /links`` (MoneyKit accepts 500 to 5000 per page)."""
        if not LINKS_PAGE_MIN <= limit <= LINKS_PAGE_MAX:
            raise ValueError(f"limit must be between {LINKS_PAGE_MIN} and {LINKS_PAGE_MAX}.")
        response = self._send("GET", "/links", params={"cursor": cursor or None, "limit": limit})
        return self._parse(response, LinkListPage)

    def iter_links(self, *, limit: int = LINKS_PAGE_MIN) -> Iterator[LinkListItem]:
        """Every link of the application, following ``next_cursor`` until it is empty."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = self.list_links(cursor=cursor, limit=limit)
            yield from page.links
            next_cursor = page.next_cursor or None
            if next_cursor is None or not page.links:
                return
            if next_cursor in seen:
                raise APIResponseValidationError("MoneyKit repeated a links cursor.")
            seen.add(next_cursor)
            cursor = next_cursor

    def get_accounts(self, link_id: str) -> AccountsResponse:
        return self._parse(
            self._send("GET", f"/links/{_quote(link_id)}/accounts"), AccountsResponse
        )

    def refresh_products(self, link_id: str, products: Sequence[str]) -> None:
        """``POST /links/{id}/products`` (202): ask MoneyKit to fetch fresh data asynchronously.

        Not retried on 429: refreshes are limited per link per hour or day, and some banks only
        allow them in certain hours, so waiting a few seconds would not help.
        """
        if not products:
            raise ValueError("name at least one product to refresh.")
        self._send(
            "POST",
            f"/links/{_quote(link_id)}/products",
            json={"products": list(products)},
            retry=_Retry.UNSENT_ONLY,
            retry_rate_limit=False,
        ).close()

    def reset_link(self, link_id: str) -> Link:
        """``POST /links/{id}/reset`` (sandbox only): forces the link to need a relink."""
        return self._parse(self._send("POST", f"/links/{_quote(link_id)}/reset"), Link)

    def update_link(
        self,
        link_id: str,
        *,
        webhook: str | Unset | None = UNSET,
        link_tags: Sequence[str] | None = None,
    ) -> Link:
        """``PATCH /links/{id}``. ``webhook=None`` clears the webhook; leaving it out keeps it.

        ``link_tags`` replaces the link's tags when given.
        """
        body: dict[str, Any] = {}
        if webhook is not UNSET:
            # An explicit JSON null is how MoneyKit is told to drop the webhook.
            body["webhook"] = webhook
        if link_tags is not None:
            if isinstance(link_tags, str):
                raise TypeError("link_tags must be a sequence of tags, not a single string")
            body["link_tags"] = list(link_tags)
        if not body:
            raise ValueError("nothing to update: pass webhook and/or link_tags.")
        response = self._send("PATCH", f"/links/{_quote(link_id)}", json=body)
        return self._parse(response, Link)

    def delete_link(self, link_id: str) -> None:
        """``DELETE /links/{id}``.

        Retried like a read, since deleting twice deletes nothing more. A ``GoneError`` means the
        link was already deleted (possibly by an earlier attempt of this very call).
        """
        self._send("DELETE", f"/links/{_quote(link_id)}").close()

    def import_link(
        self,
        *,
        customer_user_id: str,
        institution_id: str,
        accounts: Sequence[ImportAccount | Mapping[str, Any]],
        transactions: Sequence[ImportTransaction | Mapping[str, Any]] = (),
        provider: str | None = None,
    ) -> Link:
        """``POST /links/import``: a link made from data we already hold.

        The new link is readable but needs a relink (``error`` / ``auth_expired``). Not retried
        once MoneyKit may have seen it: a repeat would create a second link.
        """
        if not 4 <= len(customer_user_id) <= 150:
            raise ValueError("customer_user_id must be 4 to 150 characters long.")
        body: dict[str, Any] = {
            "customer_user": {"id": customer_user_id},
            "institution_id": institution_id,
            "accounts": [ImportAccount.model_validate(a).to_json() for a in accounts],
            "transactions": [ImportTransaction.model_validate(t).to_json() for t in transactions],
        }
        if provider is not None:
            body["provider"] = provider
        response = self._send("POST", "/links/import", json=body, retry=_Retry.UNSENT_ONLY)
        return self._parse(response, Link)

    def import_transactions(
        self, link_id: str, transactions: Sequence[ImportTransaction | Mapping[str, Any]]
    ) -> Link:
        """``POST /links/{id}/import/transactions``: append transactions to an imported link.

        Not retried once MoneyKit may have seen it: the rows would be appended twice.
        """
        body = {
            "transactions": [ImportTransaction.model_validate(t).to_json() for t in transactions]
        }
        response = self._send(
            "POST",
            f"/links/{_quote(link_id)}/import/transactions",
            json=body,
            retry=_Retry.UNSENT_ONLY,
        )
        return self._parse(response, Link)
