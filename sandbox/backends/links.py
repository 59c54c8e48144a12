"""MoneyKit's links area: links, their products and the refresh lifecycle, state changes, reads.

Every state change goes through :meth:`LinksBackend.set_state`, so each one sends its
``link.state_changed`` webhook; :meth:`break_link` and :meth:`repair_link` are the public way for
scenarios and controls to break and repair links.

Products follow MoneyKit's lifecycle. ``accounts`` is read while the user is in Connect; every
other product is fetched only when the link session asked for ``prefetch`` (right after the
exchange) or when the client asks for a refresh (``POST /links/{id}/products``). Until then its
``refreshed_at`` is null (``has_history: false`` for transactions) and its data endpoints answer
with no data. A refresh is *in progress* from its 202 until it lands ``refresh_delay_s`` later:
``last_attempted_at`` is newer than ``refreshed_at``. It lands *completed* (new ``refreshed_at``,
new data) or *failed* (``error_code``/``error_message`` on the product: the link broke meanwhile,
its institution went down, or a test asked for a failure). Each step sends
``link.product_refresh`` (``in_progress``, then ``completed`` or ``failed``), and a transactions
refresh that changed something sends ``transactions.updates_available``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sandbox import errors, ledger
from sandbox.backends.base import Clock, Seeded
from sandbox.backends.institutions import InstitutionsBackend
from sandbox.backends.webhooks import WebhooksBackend
from sandbox.cursors import decode_cursor, encode_cursor
from sandbox.demo import new_id
from sandbox.errors import MoneyKitError
from sandbox.institutions import Institution
from sandbox.limits import DEFAULT_PRODUCT_REFRESH_WINDOW_S, PRODUCT_REFRESH_WINDOW_S, RateLimiter
from sandbox.models import Account, Link, ProductStatus

LINKS_LIMIT_RANGE = (500, 5000)
LINKS_DEFAULT_LIMIT = 500
NOT_READY_STATES = ("connecting", "awaiting_token_exchange")
# Link errors that also mark each product's last attempt as failed with the same code
# (MoneyKit's LinkProductError has these two in common with the link errors).
PRODUCT_ERRORS_FROM_LINK = ("auth_expired", "institution_error")
# MoneyKit's LinkProductError values: what a failed refresh may carry.
PRODUCT_ERROR_CODES = (
    "rate_limit",
    "auth_expired",
    "not_supported",
    "timeout",
    "unknown",
    "no_accounts",
    "institution_error",
    "no_permission",
)
_FAILURE_MESSAGES = {
    "auth_expired": "The bank asked the user to log in again.",
    "institution_error": "The institution did not respond.",
    "timeout": "The institution took too long to answer.",
    "rate_limit": "The institution refused more requests for now.",
    "no_permission": "The user did not grant access to this data.",
    "not_supported": "The institution does not offer this data.",
    "no_accounts": "No account offers this data.",
    "unknown": "The refresh failed.",
}


def forbidden_product(product: str) -> MoneyKitError:
    return MoneyKitError(
        403,
        "link_error.forbidden_action",
        f"{product.replace('_', ' ').capitalize()} access not permitted",
    )


@dataclass(frozen=True, slots=True)
class RefreshStarted:
    link: Link
    products: tuple[str, ...]


class LinksBackend:
    """Links of one sandbox. Not thread-safe: every caller runs on the server's event loop."""

    def __init__(
        self,
        *,
        clock: Clock,
        seeded: Seeded,
        catalogue: InstitutionsBackend,
        events: WebhooksBackend,
        limiter: RateLimiter,
    ) -> None:
        self._clock = clock
        self._seeded = seeded
        self._catalogue = catalogue
        self._events = events
        self._limiter = limiter
        self.links: dict[str, Link] = {}
        self._next_seq = 1
        # Refreshes started and not landed yet: link id -> products.
        self._pending: dict[str, set[str]] = {}
        # Test control: the next refresh of (link, product) fails with this product error.
        self._planned_failures: dict[tuple[str, str], str] = {}

    def reset(self, links: Iterable[Link]) -> None:
        self.links = {}
        self._pending = {}
        self._planned_failures = {}
        for link in links:
            self.links[link.link_id] = link
        self._next_seq = max((link.seq for link in self.links.values()), default=0) + 1

    # ------------------------------------------------------------------------------ lookup
    def link(self, link_id: str) -> Link:
        """A link in any state, deleted included (GET /links/{id} still shows deleted links)."""
        link = self.links.get(link_id)
        if link is None:
            raise errors.link_not_found()
        return link

    def live_link(self, link_id: str) -> Link:
        """A link for data and write calls: deleted links answer 410."""
        link = self.link(link_id)
        if link.state == "deleted":
            raise errors.link_deleted()
        return link

    def data_link(self, link_id: str, product: str | None = None) -> Link:
        """A link whose data may be read: not deleted, past Connect, and granted ``product``."""
        link = self.live_link(link_id)
        if link.state in NOT_READY_STATES:
            raise errors.link_bad_state(
                link.error_code, f"Link is in state '{link.state}'; its data is not ready."
            )
        if product is not None and product not in link.products:
            raise forbidden_product(product)
        return link

    def fetched(self, link: Link, product: str) -> bool:
        """Whether MoneyKit has fetched ``product`` for ``link`` at least once."""
        status = link.products.get(product)
        return status is not None and status.refreshed_at is not None

    def list_links(self, *, cursor: str | None, limit: int | None) -> tuple[list[Link], str | None]:
        size = LINKS_DEFAULT_LIMIT if limit is None else limit
        low, high = LINKS_LIMIT_RANGE
        if not low <= size <= high:
            raise errors.validation_error(
                ["query", "limit"], f"Input should be between {low} and {high}", "value_error"
            )
        after = decode_cursor(cursor, "s") if cursor else 0
        active = [
            link for link in self.links.values() if link.seq > after and link.state != "deleted"
        ]
        page = active[:size]
        more = len(active) > size
        next_cursor = encode_cursor({"s": page[-1].seq}) if more and page else None
        return page, next_cursor

    def user_links(self, user_id: str) -> list[Link]:
        return [
            link
            for link in self.links.values()
            if link.customer_id == user_id and link.state != "deleted"
        ]

    # ------------------------------------------------------------------------------ writes
    def add_link(
        self,
        *,
        inst: Institution,
        customer_id: str,
        state: str,
        link_tags: list[str] | None,
        webhook: str | None,
        products: dict[str, ProductStatus],
        accounts: list[Account],
    ) -> Link:
        link = Link(
            link_id=new_id(self._seeded.rng, "mk_"),
            seq=self._next_seq,
            institution_id=inst.institution_id,
            customer_id=customer_id,
            created_at=self._clock(),
            state=state,
            error_code=None,
            provider=inst.provider,
            link_tags=link_tags,
            webhook=webhook,
            products=products,
            accounts=accounts,
            last_synced_at=None,
        )
        self._next_seq += 1
        self.links[link.link_id] = link
        return link

    def update_link(self, link_id: str, changes: dict[str, Any]) -> Link:
        link = self.live_link(link_id)
        if "webhook" in changes:
            link.webhook = changes["webhook"]
        # `tags` is the older name of `link_tags`; when both are sent, `link_tags` wins.
        if changes.get("link_tags") is not None:
            link.link_tags = list(changes["link_tags"])
        elif changes.get("tags") is not None:
            link.link_tags = list(changes["tags"])
        return link

    def delete_link(self, link_id: str) -> None:
        link = self.live_link(link_id)
        link.deleted_at = self._clock()
        self.set_state(link, "deleted", None)

    def reset_link(self, link_id: str) -> Link:
        """Test-only (``POST /links/{id}/reset``): the state that needs the user (relink)."""
        link = self.live_link(link_id)
        self.break_link(link, "auth_expired")
        return link

    # ------------------------------------------------------------------------ state changes
    def set_state(self, link: Link, state: str, error_code: str | None) -> None:
        """Every state change goes through here, so each one sends ``link.state_changed``."""
        changed = (link.state, link.error_code) != (state, error_code)
        link.state = state
        link.error_code = error_code
        if changed:
            self._events.state_changed(link)

    def break_link(self, link: Link, error_code: str) -> None:
        """Put a link in ``error`` with ``error_code`` (sends ``link.state_changed``).

        Each product's last attempt is marked as failed, with the link's code where MoneyKit's
        product errors have it.
        """
        now = self._clock()
        self.set_state(link, "error", error_code)
        product_error = error_code if error_code in PRODUCT_ERRORS_FROM_LINK else None
        for status in link.products.values():
            status.last_attempted_at = now
            status.error_code = product_error
            status.error_message = _FAILURE_MESSAGES.get(product_error or "")

    def repair_link(self, link: Link) -> None:
        """Back to ``connected`` with every product freshly refreshed (sends the webhook)."""
        now = self._clock()
        for status in link.products.values():
            status.error_code = None
            status.error_message = None
            status.refreshed_at = now
            status.last_attempted_at = now
        link.last_synced_at = now
        self.set_state(link, "connected", None)

    def recover(self, link: Link) -> None:
        """Back to ``connected`` after an outage, data as it was (sends the webhook)."""
        for status in link.products.values():
            status.error_code = None
            status.error_message = None
        self.set_state(link, "connected", None)

    def force_state(self, link_id: str, state: str, error_code: str | None) -> Link:
        """Test control: put a link in any state, bypassing the normal lifecycle."""
        link = self.link(link_id)
        if state == "error":
            if error_code is None:
                raise errors.validation_error(
                    ["body", "error_code"],
                    "error_code is required when state is 'error'",
                    "missing",
                )
            self.break_link(link, error_code)
            link.deleted_at = None
            return link
        if error_code is not None:
            raise errors.validation_error(
                ["body", "error_code"],
                "error_code is only allowed when state is 'error'",
                "value_error",
            )
        link.deleted_at = self._clock() if state == "deleted" else None
        if state == "connected":
            self.repair_link(link)
        else:
            self.set_state(link, state, None)
        return link

    # --------------------------------------------------------------- products and refreshes
    def refresh_products(self, link_id: str, products: list[str]) -> Link:
        """``POST /links/{id}/products`` (202): start a refresh; :meth:`settle_refresh` lands it."""
        link = self.live_link(link_id)
        if self._catalogue.is_down(link.institution_id):
            self.break_link(link, "institution_error")
        if link.state != "connected":
            raise errors.link_bad_state(
                link.error_code, f"Link is in state '{link.state}' and cannot be refreshed."
            )
        for product in products:
            if product not in link.products:
                raise forbidden_product(product)
        wanted = tuple(dict.fromkeys(products))
        for product in wanted:
            window = PRODUCT_REFRESH_WINDOW_S.get(product, DEFAULT_PRODUCT_REFRESH_WINDOW_S)
            wait = self._limiter.hit(("refresh", link.link_id, product), 1, window)
            if wait is not None:
                raise errors.rate_limited(wait)
        self.start_refresh(link, wanted)
        return link

    def start_refresh(self, link: Link, products: Iterable[str]) -> RefreshStarted:
        """Mark ``products`` in progress (sends ``link.product_refresh`` ``in_progress``)."""
        now = self._clock()
        started = tuple(p for p in dict.fromkeys(products) if p in link.products)
        for product in started:
            status = link.products[product]
            status.last_attempted_at = now
            status.error_code = None
            status.error_message = None
            self._events.product_refresh(link, product, "in_progress")
        if started:
            self._pending.setdefault(link.link_id, set()).update(started)
        return RefreshStarted(link, started)

    def prefetch(self, link: Link) -> RefreshStarted:
        """Start fetching the products whose link-session settings asked for ``prefetch``."""
        wanted = [
            name
            for name, status in link.products.items()
            if status.refreshed_at is None and status.settings.get("prefetch")
        ]
        return self.start_refresh(link, wanted)

    def refreshing(self, link_id: str) -> frozenset[str]:
        return frozenset(self._pending.get(link_id, ()))

    def pending_refresh_links(self) -> list[str]:
        return list(self._pending)

    def fail_next_refresh(self, link_id: str, products: Iterable[str], error_code: str) -> Link:
        """Test control: the next refresh of these products fails with ``error_code``."""
        link = self.live_link(link_id)
        if error_code not in PRODUCT_ERROR_CODES:
            raise errors.validation_error(
                ["body", "error_code"],
                f"Input should be one of: {', '.join(PRODUCT_ERROR_CODES)}",
                "enum",
            )
        for product in products:
            if product not in link.products:
                raise forbidden_product(product)
            self._planned_failures[(link_id, product)] = error_code
        return link

    def _failure(self, link: Link, product: str) -> str | None:
        planned = self._planned_failures.pop((link.link_id, product), None)
        if planned is not None:
            return planned
        if link.state != "connected":
            code = link.error_code
            return code if code in PRODUCT_ERRORS_FROM_LINK else "unknown"
        if self._catalogue.is_down(link.institution_id):
            return "institution_error"
        return None

    def settle_refresh(self, link_id: str) -> None:
        """Land a started refresh: new data or a failure, and the webhooks MoneyKit sends."""
        products = self._pending.pop(link_id, set())
        link = self.links.get(link_id)
        if link is None or not products or link.state == "deleted":
            return
        now = self._clock()
        landed = False
        for product in sorted(products):
            status = link.products.get(product)
            if status is None:
                continue
            status.last_attempted_at = now
            failure = self._failure(link, product)
            if failure is not None:
                status.error_code = failure
                status.error_message = _FAILURE_MESSAGES[failure]
                self._events.product_refresh(
                    link, product, "failed", error_message=status.error_message
                )
                continue
            first_fetch = status.refreshed_at is None
            status.refreshed_at = now
            status.error_code = None
            status.error_message = None
            changes = (
                self._fetch_transactions(link, first_fetch) if product == "transactions" else 0
            )
            self._events.product_refresh(link, product, "completed")
            if changes:
                self._events.updates_available(link)
            landed = True
        if landed:
            link.last_synced_at = now

    def settle_all_refreshes(self) -> int:
        pending = self.pending_refresh_links()
        for link_id in pending:
            self.settle_refresh(link_id)
        return len(pending)

    # ------------------------------------------------------------------------ transactions
    def ledger(self, link: Link) -> ledger.Ledger:
        """The link's transactions and change log (empty until transactions are fetched)."""
        if link.ledger is None:
            status = link.products.get("transactions")
            if status is not None and status.refreshed_at is None and not link.imported:
                link.ledger = ledger.Ledger()
            else:
                until = (status.refreshed_at if status else None) or link.created_at
                link.ledger = ledger.build_history(
                    self._seeded.seed, link.link_id, link.accounts, until
                )
        book: ledger.Ledger = link.ledger
        return book

    def _fetch_transactions(self, link: Link, first_fetch: bool) -> int:
        book = self.ledger(link)
        if first_fetch and book.covered_until is None:
            # The first fetch brings the history in: every transaction arrives as created.
            history = ledger.build_history(
                self._seeded.seed, link.link_id, link.accounts, self._clock()
            )
            for txn in history.txns.values():
                book.record("created", txn)
            book.covered_until = history.covered_until
            return len(history.txns)
        link.refresh_count += 1
        return ledger.refresh(
            book, self._seeded.seed, link.link_id, link.refresh_count, link.accounts, self._clock()
        )
