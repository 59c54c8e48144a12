"""The sandbox backend: every piece of state and every behaviour, owned by one app instance.

Route modules stay thin: they parse the request, call a method here and render the result.
All handlers are ``async`` and run on the server's single event loop, so methods here never run
concurrently and need no locks.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from sandbox import errors, ledger
from sandbox.backends.auth import AuthBackend
from sandbox.backends.institutions import InstitutionsBackend
from sandbox.cursors import decode_cursor, encode_cursor
from sandbox.demo import build_demo_links, custom_accounts, make_accounts, new_id
from sandbox.errors import ConnectError, MoneyKitError
from sandbox.institutions import (
    GOOD_PASSWORD,
    GOOD_USERNAME,
    Institution,
)
from sandbox.keys import SigningKey, new_signing_key
from sandbox.limits import (
    DEFAULT_PRODUCT_REFRESH_WINDOW_S,
    PRODUCT_REFRESH_WINDOW_S,
    Faults,
    RateLimiter,
)
from sandbox.models import (
    AccessToken,
    Account,
    ExchangeableToken,
    Link,
    LinkSession,
    ProductStatus,
)
from sandbox.redirects import RedirectUris
from sandbox.scenarios import ScenarioDirector
from sandbox.schemas import CreateLinkSessionIn, ImportLinkIn, TransactionImportIn
from sandbox.webhooks import WebhookConfig, WebhookDispatcher

# Logins of the credentials banks (documented in the README and on the Credentials screen).
LOCKED_USERNAME = "user_locked"
MFA_USERNAME = "user_mfa"
MFA_CODE = "123456"
# Signing keys stay on the JWKS this long after a rotation, so in-flight signatures verify.
RETIRED_KEYS_KEPT = 3

Clock = Callable[[], datetime]

LINK_SESSION_TTL = timedelta(minutes=30)
LINKS_LIMIT_RANGE = (500, 5000)
# Data providers whose own institution ids an import may use as "<provider>.<id>".
IMPORT_PROVIDERS = frozenset({"moneykit", "finicity", "plaid", "yodlee", "mx", "akoya"})
LINKS_DEFAULT_LIMIT = 500
# Products a new link gets when the link session asks for none (assumed; MoneyKit does not say).
DEFAULT_SESSION_PRODUCTS = ("accounts", "transactions")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _import_account_type(kind: str) -> str:
    """Map a free-text imported account type onto MoneyKit's dotted types."""
    text = kind.strip().lower().replace(" ", "_")
    if "." in text:
        return text
    for words, mapped in (
        (("checking", "chequing", "current"), "depository.checking"),
        (("saving",), "depository.savings"),
        (("credit",), "liability.credit_card"),
        (("mortgage",), "liability.mortgage"),
        (("loan",), "liability.loan"),
        (("brokerage", "investment", "retirement", "ira", "401k"), "investment.brokerage"),
    ):
        if any(word in text for word in words):
            return mapped
    return "other"


@dataclass(frozen=True)
class MfaRequired:
    institution: Institution


@dataclass(frozen=True)
class OAuthRequired:
    institution: Institution
    oauth_state: str


@dataclass(frozen=True)
class ConnectResult:
    """What the Connect UI needs after a flow finishes."""

    link: Link
    institution: Institution
    exchangeable_token: str | None
    selected: list[Account]


LoginOutcome = ConnectResult | list[Account] | MfaRequired | OAuthRequired


class SandboxState:
    """Links, institutions, sessions and tokens of one sandbox, plus the seeded RNG behind them."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        seed: int = 42,
        demo_links: int = 300,
        clock: Clock | None = None,
        app_name: str = "Linkdesk Sandbox",
        webhook_config: WebhookConfig | None = None,
        refresh_delay_s: float = 0.5,
        demo_webhook_url: str | None = None,
        redirect_uris: Sequence[str] | None = None,
    ) -> None:
        self.client_id = client_id
        self.redirect_uris = RedirectUris(redirect_uris)
        # The webhook URL the company's customer app gave its links (None: no webhooks).
        self.demo_webhook_url = demo_webhook_url
        self.app_name = app_name
        self._base_clock: Clock = clock or utcnow
        # Moved by /_sandbox/time; every expiry, rate-limit window and timestamp uses it.
        self.clock_offset = timedelta(0)
        self.clock: Clock = self._now
        self.signing_keys: list[SigningKey] = [new_signing_key()]
        self.limiter = RateLimiter(self._now)
        self.faults = Faults()
        self.issuer = "http://localhost"
        self.webhooks = WebhookDispatcher(
            signing_key=lambda: self.signing_keys[-1],
            clock=self._now,
            issuer=lambda: self.issuer,
            config=webhook_config,
        )
        # Seconds between POST /links/{id}/products (202) and the refresh landing.
        self.refresh_delay_s = refresh_delay_s
        self._pending_refreshes: dict[str, set[str]] = {}
        self.down_institutions: set[str] = set()
        # When true the OAuth bank page sends COOP, which cuts `window.opener` of the popup.
        self.oauth_cut_opener = False
        # Access tokens survive a demo reset: they are credentials, not demo data, and a running
        # client should not be logged out by a test resetting links.
        self.auth = AuthBackend(client_id, client_secret, self._now)
        self.seed = seed
        self.demo_link_count = demo_links
        self.catalogue = InstitutionsBackend()
        # The same dict as the catalogue's, for the many readers of ``state.institutions``.
        self.institutions: dict[str, Institution] = self.catalogue.institutions
        self.links: dict[str, Link] = {}
        self.link_sessions: dict[str, LinkSession] = {}
        self.exchangeable_tokens: dict[str, ExchangeableToken] = {}
        self.rng = random.Random(seed)
        self._next_seq = 1
        self.scenarios = ScenarioDirector(self)
        self.reset()

    def _now(self) -> datetime:
        return self._base_clock() + self.clock_offset

    # ----------------------------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, demo_links: int | None = None) -> None:
        """Rebuild institutions, demo links and sessions exactly as a fresh start with this seed."""
        if seed is not None:
            self.seed = seed
        if demo_links is not None:
            self.demo_link_count = demo_links
        self.rng = random.Random(self.seed)
        self.catalogue.reset()
        self.institutions = self.catalogue.institutions
        self.links = {}
        self.link_sessions = {}
        self.exchangeable_tokens = {}
        self._next_seq = 1
        self._pending_refreshes = {}
        self.down_institutions = set()
        self.oauth_cut_opener = False
        self.limiter.reset()
        self.webhooks.clear()
        self.scenarios.forget()
        demo = build_demo_links(
            self.rng, list(self.institutions.values()), self.demo_link_count, self.clock()
        )
        for link in demo:
            link.webhook = self.demo_webhook_url
            self.links[link.link_id] = link
        self._next_seq = len(demo) + 1

    # ------------------------------------------------------------------------------------ auth
    def issue_access_token(
        self, client_id: str | None, client_secret: str | None, scope: str
    ) -> tuple[str, int]:
        return self.auth.issue_access_token(client_id, client_secret, scope)

    def authenticate(self, authorization: str | None) -> AccessToken:
        return self.auth.authenticate(authorization)

    # ---------------------------------------------------------------------------- institutions
    def institution(self, institution_id: str) -> Institution:
        return self.catalogue.institution(institution_id)

    def list_institutions(
        self, *, name: str | None, featured: bool | None, cursor: str | None, limit: int | None
    ) -> tuple[list[Institution], str | None]:
        return self.catalogue.list_institutions(
            name=name, featured=featured, cursor=cursor, limit=limit
        )

    # ----------------------------------------------------------------------------------- links
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

    def _add_link(
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
        now = self.clock()
        link = Link(
            link_id=new_id(self.rng, "mk_"),
            seq=self._next_seq,
            institution_id=inst.institution_id,
            customer_id=customer_id,
            created_at=now,
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
        link.deleted_at = self.clock()
        self._set_state(link, "deleted", None)

    def reset_link(self, link_id: str) -> Link:
        """Test-only: force the link into the state that needs the user (relink)."""
        link = self.live_link(link_id)
        self._set_error(link, "auth_expired")
        return link

    def _set_state(self, link: Link, state: str, error_code: str | None) -> None:
        """Every state change goes through here, so each one sends ``link.state_changed``."""
        changed = (link.state, link.error_code) != (state, error_code)
        link.state = state
        link.error_code = error_code
        if changed:
            extra: dict[str, Any] = {"state": state}
            if error_code is not None:
                extra["error"] = error_code
                extra["error_message"] = f"The link is in error: {error_code}."
            self.emit_webhook(link, "link.state_changed", extra)

    def break_link(self, link: Link, error_code: str) -> None:
        """Put a link in ``error`` with ``error_code`` (sends ``link.state_changed``)."""
        self._set_error(link, error_code)

    def repair_link(self, link: Link) -> None:
        """Back to ``connected``, products refreshed (sends ``link.state_changed``)."""
        self.reconnect(link)

    def _set_error(self, link: Link, error_code: str) -> None:
        now = self.clock()
        self._set_state(link, "error", error_code)
        product_error = error_code if error_code in ("auth_expired", "institution_error") else None
        for status in link.products.values():
            status.last_attempted_at = now
            status.error_code = product_error

    def refresh_products(self, link_id: str, products: list[str]) -> Link:
        """Start a refresh (202): it lands ``refresh_delay_s`` later, see :meth:`settle_refresh`."""
        link = self.live_link(link_id)
        if link.institution_id in self.down_institutions:
            self._set_error(link, "institution_error")
        if link.state != "connected":
            raise errors.link_bad_state(
                link.error_code, f"Link is in state '{link.state}' and cannot be refreshed."
            )
        for product in products:
            if product not in link.products:
                raise MoneyKitError(
                    403,
                    "link_error.forbidden_action",
                    f"{product.replace('_', ' ').capitalize()} access not permitted",
                )
        for product in dict.fromkeys(products):
            window = PRODUCT_REFRESH_WINDOW_S.get(product, DEFAULT_PRODUCT_REFRESH_WINDOW_S)
            wait = self.limiter.hit(("refresh", link.link_id, product), 1, window)
            if wait is not None:
                raise errors.rate_limited(wait)
        now = self.clock()
        for product in products:
            link.products[product].last_attempted_at = now
        self._pending_refreshes.setdefault(link.link_id, set()).update(products)
        return link

    def pending_refresh_links(self) -> list[str]:
        return list(self._pending_refreshes)

    def settle_refresh(self, link_id: str) -> None:
        """Land a started refresh: new data, ``refreshed_at``, and the webhooks MoneyKit sends."""
        products = self._pending_refreshes.pop(link_id, set())
        link = self.links.get(link_id)
        if link is None or not products or link.state != "connected":
            return
        now = self.clock()
        for product in sorted(products):
            status = link.products.get(product)
            if status is None:
                continue
            status.refreshed_at = now
            status.last_attempted_at = now
            status.error_code = None
            status.error_message = None
            changes = 0
            if product == "transactions":
                changes = self.refresh_transactions(link)
            self.emit_webhook(
                link,
                "link.product_refresh",
                {"product": product, "state": "completed", "state_changed_at": _iso(now)},
            )
            if changes:
                self.emit_webhook(link, "transactions.updates_available", {"has_history": True})
        link.last_synced_at = now

    def settle_all_refreshes(self) -> int:
        pending = self.pending_refresh_links()
        for link_id in pending:
            self.settle_refresh(link_id)
        return len(pending)

    # ------------------------------------------------------------------------------ data
    def data_link(self, link_id: str, product: str | None = None) -> Link:
        """A link whose data may be read: not deleted, past Connect, and granted ``product``."""
        link = self.live_link(link_id)
        if link.state in ("connecting", "awaiting_token_exchange"):
            raise errors.link_bad_state(
                link.error_code, f"Link is in state '{link.state}'; its data is not ready."
            )
        if product is not None and product not in link.products:
            raise MoneyKitError(
                403,
                "link_error.forbidden_action",
                f"{product.replace('_', ' ').capitalize()} access not permitted",
            )
        return link

    def ledger(self, link: Link) -> ledger.Ledger:
        if link.ledger is None:
            status = link.products.get("transactions")
            until = (status.refreshed_at if status else None) or link.created_at
            link.ledger = ledger.build_history(self.seed, link.link_id, link.accounts, until)
        book: ledger.Ledger = link.ledger
        return book

    def refresh_transactions(self, link: Link) -> int:
        book = self.ledger(link)
        link.refresh_count += 1
        return ledger.refresh(
            book, self.seed, link.link_id, link.refresh_count, link.accounts, self.clock()
        )

    def user_links(self, user_id: str) -> list[Link]:
        return [
            link
            for link in self.links.values()
            if link.customer_id == user_id and link.state != "deleted"
        ]

    # ---------------------------------------------------------------------------- import
    def import_link(self, request: ImportLinkIn) -> Link:
        inst = self._import_institution(request.institution_id)
        now = self.clock()
        seen: set[str] = set()
        accounts: list[Account] = []
        by_their_id: dict[str, Account] = {}
        for index, data in enumerate(request.accounts):
            if data.account_id in seen:
                raise errors.validation_error(
                    ["body", "accounts", index, "account_id"],
                    "account_id must be unique in the batch",
                    "value_error",
                )
            seen.add(data.account_id)
            balances = data.balances or {}
            account = Account(
                account_id=new_id(self.rng, "acc_"),
                account_type=_import_account_type(data.type),
                name=data.name,
                mask=(data.mask or data.account_id[-4:])[-4:],
                currency=str(balances.get("currency") or inst.currency),
                current=float(balances.get("current") or 0.0),
                available=_opt_float(balances.get("available")),
                limit=_opt_float(balances.get("limit")),
                balance_date=now,
                nickname=data.nickname,
                original_id=data.account_id,
            )
            accounts.append(account)
            by_their_id[data.account_id] = account
        products = {
            "accounts": ProductStatus(refreshed_at=now, last_attempted_at=now),
            "transactions": ProductStatus(refreshed_at=now, last_attempted_at=now),
        }
        link = self._add_link(
            inst=inst,
            customer_id=request.customer_user.id,
            state="error",
            link_tags=None,
            webhook=None,
            products=products,
            accounts=accounts,
        )
        if request.provider:
            link.provider = request.provider
        link.imported = True
        # Protocol §3.4: an imported link starts disconnected (auth_expired) but is readable.
        link.error_code = "auth_expired"
        link.last_synced_at = now
        link.ledger = ledger.Ledger(covered_until=now.date())
        self._import_transactions(link, by_their_id, request.transactions, "transactions")
        return link

    def _import_institution(self, their_id: str) -> Institution:
        """A MoneyKit id, an alias, or a provider's own id as ``<provider>.<their id>``.

        Provider ids (``mx.chase``) name banks the offline catalogue does not have: a known
        provider prefix maps the id, stably, to one of the catalogue's banks served by that
        provider (any bank when none is), so an import written for the real MoneyKit works here.
        """
        try:
            return self.institution(their_id)
        except MoneyKitError:
            provider, dot, rest = their_id.partition(".")
            if not dot or not rest or provider not in IMPORT_PROVIDERS:
                raise
        try:
            return self.institution(rest)
        except MoneyKitError:
            pass
        ordered = sorted(self.institutions.values(), key=lambda i: i.institution_id)
        served = [i for i in ordered if provider in i.providers] or ordered
        digest = hashlib.sha256(their_id.encode()).digest()
        return served[int.from_bytes(digest[:4], "big") % len(served)]

    def import_transactions(self, link_id: str, rows: list[TransactionImportIn]) -> Link:
        link = self.live_link(link_id)
        by_their_id = {a.original_id or a.account_id: a for a in link.accounts}
        by_their_id.update({a.account_id: a for a in link.accounts})
        self.ledger(link)
        self._import_transactions(link, by_their_id, rows, "transactions")
        return link

    def _import_transactions(
        self,
        link: Link,
        accounts: dict[str, Account],
        rows: list[TransactionImportIn],
        where: str,
    ) -> None:
        book = self.ledger(link)
        for index, row in enumerate(rows):
            account = accounts.get(row.account_id)
            if account is None:
                raise errors.validation_error(
                    ["body", where, index, "account_id"],
                    "account_id does not match an imported account",
                    "value_error",
                )
            try:
                signed = float(row.amount)
                day = row.parsed_date()
            except ValueError as exc:
                raise errors.validation_error(
                    ["body", where, index], f"Invalid amount or date: {exc}", "value_error"
                ) from exc
            book.record(
                "created",
                ledger.Txn(
                    transaction_id=new_id(self.rng, "txn_", 20),
                    account_id=account.account_id,
                    amount=f"{abs(signed):.2f}",
                    type="credit" if signed > 0 else "debit",
                    currency=account.currency,
                    date=day,
                    description=row.description or "",
                    raw_description=row.description or "",
                    pending=False,
                    category="general",
                    subcategory="other_general",
                    merchant=None,
                    original_id=row.transaction_id,
                ),
            )

    # -------------------------------------------------------------------------- webhooks
    def emit_webhook(self, link: Link, event: str, extra: dict[str, Any]) -> str | None:
        """Queue a webhook for ``link`` if it has a URL; returns the delivery token."""
        if not link.webhook:
            return None
        return self.send_webhook(link, event, extra)

    def send_webhook(
        self, link: Link, event: str, extra: dict[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        assert link.webhook is not None
        payload: dict[str, Any] = {
            "webhook_event": event,
            "webhook_major_version": 1,
            "webhook_minor_version": 0,
            "webhook_idempotency_key": idempotency_key or f"whk_{secrets.token_hex(12)}",
            "webhook_timestamp": _iso(self.clock()),
            "link_id": link.link_id,
            "link_tags": list(link.link_tags or []),
            **extra,
        }
        return self.webhooks.enqueue(
            url=link.webhook, event=event, link_id=link.link_id, payload=payload
        )

    def test_webhook(self, link_id: str, event: str, idempotency_key: str) -> str:
        link = self.live_link(link_id)
        if not link.webhook:
            raise MoneyKitError(
                400, "link_error.bad_config", "This link has no webhook URL to deliver to."
            )
        now = _iso(self.clock())
        if event == "link.state_changed":
            extra: dict[str, Any] = {"state": link.state}
            if link.error_code:
                extra["error"] = link.error_code
        elif event == "transactions.updates_available":
            extra = {"has_history": True}
        else:
            # The SDK's product model only accepts `link.product_refresh` as the event name,
            # so the test event `product.state_changed` is delivered under that name too.
            event = "link.product_refresh"
            product = next(iter(link.products), "accounts")
            extra = {"product": product, "state": "completed", "state_changed_at": now}
        return self.send_webhook(link, event, extra, idempotency_key=idempotency_key)

    def rotate_signing_key(self) -> SigningKey:
        self.signing_keys.append(new_signing_key())
        del self.signing_keys[: -(RETIRED_KEYS_KEPT + 1)]
        return self.signing_keys[-1]

    # ------------------------------------------------------------------------ institutions
    def set_institution_down(self, institution_id: str, down: bool) -> list[Link]:
        """Take an institution down (its links go to institution_error) or bring it back."""
        inst = self.institution(institution_id)
        touched = []
        if down:
            self.down_institutions.add(inst.institution_id)
            for link in self.links.values():
                if link.institution_id == inst.institution_id and link.state == "connected":
                    self._set_error(link, "institution_error")
                    touched.append(link)
        else:
            self.down_institutions.discard(inst.institution_id)
            for link in self.links.values():
                if (
                    link.institution_id == inst.institution_id
                    and link.state == "error"
                    and link.error_code == "institution_error"
                ):
                    for status in link.products.values():
                        status.error_code = None
                    self._set_state(link, "connected", None)
                    touched.append(link)
        return touched

    def force_link_state(self, link_id: str, state: str, error_code: str | None) -> Link:
        """Test control: put a link in any state, bypassing the normal lifecycle."""
        link = self.link(link_id)
        if state == "error":
            if error_code is None:
                raise errors.validation_error(
                    ["body", "error_code"],
                    "error_code is required when state is 'error'",
                    "missing",
                )
            self._set_error(link, error_code)
            link.deleted_at = None
            return link
        if error_code is not None:
            raise errors.validation_error(
                ["body", "error_code"],
                "error_code is only allowed when state is 'error'",
                "value_error",
            )
        link.deleted_at = self.clock() if state == "deleted" else None
        if state == "connected":
            self.reconnect(link)
        else:
            self._set_state(link, state, None)
        return link

    def reconnect(self, link: Link) -> None:
        """Back to ``connected`` with every product freshly refreshed (sends the webhook)."""
        now = self.clock()
        for status in link.products.values():
            status.error_code = None
            status.refreshed_at = now
            status.last_attempted_at = now
        link.last_synced_at = now
        self._set_state(link, "connected", None)

    # ----------------------------------------------------------------------- link sessions
    def create_link_session(self, request: CreateLinkSessionIn) -> str:
        self.redirect_uris.check(request.redirect_uri)
        if request.existing_link_id is not None:
            self.live_link(request.existing_link_id)
        elif request.institution_id is not None:
            self.institution(request.institution_id)
        settings = request.settings.model_dump(exclude_none=True) if request.settings else {}
        now = self.clock()
        token = f"lst_{secrets.token_urlsafe(24)}"
        self.link_sessions[token] = LinkSession(
            token=token,
            created_at=now,
            expires_at=now + LINK_SESSION_TTL,
            customer_user=request.customer_user.model_dump(exclude_none=True),
            redirect_uri=request.redirect_uri,
            existing_link_id=request.existing_link_id,
            institution_id=request.institution_id if request.existing_link_id is None else None,
            webhook=request.webhook,
            link_tags=list(request.link_tags) if request.link_tags is not None else None,
            settings=settings,
            custom_accounts=(
                [a.model_dump() for a in request.custom_sandbox_data.accounts]
                if request.custom_sandbox_data
                else None
            ),
            owners=(
                list(request.custom_sandbox_data.owners)
                if request.custom_sandbox_data and request.custom_sandbox_data.owners
                else None
            ),
            connect_features=dict(request.connect_features or {}),
        )
        return token

    def exchange_token(self, exchangeable_token: str) -> Link:
        record = self.exchangeable_tokens.get(exchangeable_token)
        if record is None:
            raise errors.invalid_token_exchange("Invalid exchangeable token.")
        if record.used_at is not None:
            raise errors.invalid_token_exchange("This token has already been exchanged.")
        link = self.links.get(record.link_id)
        if link is None or link.state == "deleted":
            raise errors.invalid_token_exchange("The link for this token no longer exists.")
        now = self.clock()
        record.used_at = now
        if link.state == "awaiting_token_exchange":
            self._set_state(link, "connected", None)
            link.last_synced_at = now
            for status in link.products.values():
                status.refreshed_at = now
                status.last_attempted_at = now
        return link

    # ------------------------------------------------------------------------- Connect (UI)
    def connect_session(
        self, token: str | None, mode: str, *, allow_completed: bool = False
    ) -> LinkSession:
        """The session behind a Connect page, checked against the page's mode.

        ``mode`` is the launcher path: ``start`` (link), ``relink`` or ``continue``. A finished
        session can only be reopened through ``continue`` (or re-read with ``allow_completed``,
        which keeps a repeated "complete" call idempotent).
        """
        session = self.link_sessions.get(token or "")
        if session is None:
            raise ConnectError(
                401,
                "invalid_link_session",
                "This link session is not valid. Please close this window and start again.",
            )
        if session.status != "completed" and session.expires_at <= self.clock():
            raise ConnectError(
                401,
                "link_session_expired",
                "This link session has expired. Please close this window and start again.",
            )
        if mode == "start" and session.is_relink:
            raise ConnectError(
                400,
                "invalid_link_session",
                "This link session repairs an existing connection; open it with relink().",
            )
        if mode == "relink" and not session.is_relink:
            raise ConnectError(
                400,
                "invalid_link_session",
                "This link session is for a new connection; open it with link().",
            )
        if mode != "continue" and session.status == "completed" and not allow_completed:
            raise ConnectError(
                400, "link_session_completed", "This link session has already been completed."
            )
        if session.is_relink:
            assert session.existing_link_id is not None
            link = self.links.get(session.existing_link_id)
            if link is None or link.state == "deleted":
                raise ConnectError(
                    410,
                    "link_deleted",
                    "The connection you are trying to repair no longer exists.",
                )
        return session

    def offered_institutions(self, session: LinkSession) -> list[Institution]:
        """Institutions the picker shows, narrowed by the session's required products/countries."""
        required = [
            name
            for name, product in (session.settings.get("products") or {}).items()
            if product.get("required")
        ]
        countries = session.settings.get("countries")
        return [
            inst
            for inst in self.institutions.values()
            if all(p in inst.products for p in required)
            and (not countries or inst.country in countries)
        ]

    def relink_target(self, session: LinkSession) -> tuple[Link, Institution]:
        assert session.existing_link_id is not None
        link = self.link(session.existing_link_id)
        return link, self.institutions[link.institution_id]

    def connect_institution(
        self, session: LinkSession, institution_id: str, username: str | None, password: str | None
    ) -> LoginOutcome:
        """Log in to an institution (first step after choosing it in Connect).

        Returns candidate accounts (new link), the finished result (relink), or the next step the
        page must show: the MFA screen or the bank's OAuth page.
        """
        inst, link = self._login_target(session, institution_id)
        if inst.institution_id in self.down_institutions:
            raise ConnectError(
                503,
                "institution_down",
                f"{inst.name} is not responding right now. Please try again later.",
            )
        if inst.auth == "oauth":
            session.oauth_state = secrets.token_urlsafe(18)
            session.oauth_institution_id = inst.institution_id
            session.oauth_outcome = None
            return OAuthRequired(inst, session.oauth_state)
        if inst.auth == "credentials":
            if username == LOCKED_USERNAME:
                raise ConnectError(
                    400,
                    "user_setup_required",
                    "Your account is locked. Visit your bank's website to unlock it, "
                    "then try again.",
                )
            if (username, password) == (MFA_USERNAME, GOOD_PASSWORD):
                session.mfa_institution_id = inst.institution_id
                return MfaRequired(inst)
            if (username, password) != (GOOD_USERNAME, GOOD_PASSWORD):
                raise ConnectError(
                    400,
                    "invalid_credentials",
                    "The username or password you entered is incorrect. Please try again.",
                )
        return self._logged_in(session, inst, link)

    def submit_mfa(self, session: LinkSession, code: str) -> LoginOutcome:
        if session.status == "completed" or session.mfa_institution_id is None:
            raise ConnectError(400, "invalid_request", "No verification code was requested.")
        inst, link = self._login_target(session, session.mfa_institution_id)
        if code.strip() != MFA_CODE:
            raise ConnectError(
                400,
                "user_input_incorrect",
                "The code you entered is incorrect. Please try again.",
            )
        session.mfa_institution_id = None
        return self._logged_in(session, inst, link)

    def oauth_decide(self, oauth_state: str, approved: bool) -> tuple[LinkSession, str]:
        """The bank's consent answer; returns the session and where the bank redirects to."""
        session = next(
            (s for s in self.link_sessions.values() if s.oauth_state == oauth_state), None
        )
        if session is None or session.status == "completed":
            raise ConnectError(400, "invalid_request", "This authorisation request is not valid.")
        session.oauth_outcome = "approved" if approved else "denied"
        params = {"state": oauth_state}
        if approved:
            params["code"] = f"oac_{secrets.token_urlsafe(12)}"
        else:
            params["error"] = "access_denied"
        joiner = "&" if "?" in session.redirect_uri else "?"
        return session, session.redirect_uri + joiner + urlencode(params)

    def oauth_session(self, oauth_state: str) -> LinkSession | None:
        return next((s for s in self.link_sessions.values() if s.oauth_state == oauth_state), None)

    def finish_oauth(self, session: LinkSession, redirect_url: str) -> LoginOutcome:
        """Resume after the bank: ``redirect_url`` is the return page's URL with our params."""
        if session.status == "completed":
            return self.connect_result(session)
        query = parse_qs(urlsplit(redirect_url).query)
        returned_state = (query.get("state") or [""])[0]
        if not session.oauth_state or returned_state != session.oauth_state:
            raise ConnectError(
                400, "invalid_request", "The bank's answer does not match this session."
            )
        if session.oauth_outcome is None:
            raise ConnectError(400, "invalid_request", "The bank has not answered yet.")
        assert session.oauth_institution_id is not None
        inst, link = self._login_target(session, session.oauth_institution_id)
        if session.oauth_outcome == "denied" or "error" in query:
            raise ConnectError(
                400,
                "user_oauth_denied",
                f"You did not give permission at {inst.name}. Please try again.",
            )
        if session.candidate_accounts and session.chosen_institution_id == inst.institution_id:
            # Both windows may resume the same flow; the second gets the same accounts.
            return session.candidate_accounts
        return self._logged_in(session, inst, link)

    def _login_target(
        self, session: LinkSession, institution_id: str
    ) -> tuple[Institution, Link | None]:
        if session.status == "completed":
            raise ConnectError(
                400, "link_session_completed", "This link session has already been completed."
            )
        if session.is_relink:
            link, inst = self.relink_target(session)
            if institution_id != inst.institution_id:
                raise ConnectError(
                    400, "institution_mismatch", "A relink must use the link's own institution."
                )
            return inst, link
        offered = {i.institution_id: i for i in self.offered_institutions(session)}
        if institution_id not in offered:
            raise ConnectError(
                400,
                "institution_not_available",
                "This institution is not available for this connection.",
            )
        return offered[institution_id], None

    def _logged_in(
        self, session: LinkSession, inst: Institution, link: Link | None
    ) -> ConnectResult | list[Account]:
        if link is not None:
            return self._complete_relink(session, link, inst)
        now = self.clock()
        session.chosen_institution_id = inst.institution_id
        if session.custom_accounts:
            session.candidate_accounts = custom_accounts(
                self.rng, inst, session.custom_accounts, now
            )
        else:
            session.candidate_accounts = make_accounts(self.rng, inst, self.rng.randint(2, 3), now)
        return session.candidate_accounts

    def _session_products(
        self, session: LinkSession, inst: Institution
    ) -> dict[str, ProductStatus]:
        requested: dict[str, dict[str, Any]] = dict(session.settings.get("products") or {})
        names = ["accounts", *requested] if requested else list(DEFAULT_SESSION_PRODUCTS)
        products: dict[str, ProductStatus] = {}
        for name in names:
            if name in inst.products and name not in products:
                products[name] = ProductStatus(settings=dict(requested.get(name, {})))
        return products

    def _complete_relink(
        self, session: LinkSession, link: Link, inst: Institution
    ) -> ConnectResult:
        now = self.clock()
        link.last_synced_at = now
        # Protocol §3.4: webhook and tags are replaced by the session's, removed when omitted.
        link.webhook = session.webhook
        link.link_tags = list(session.link_tags) if session.link_tags is not None else None
        for name, status in self._session_products(session, inst).items():
            link.products.setdefault(name, status)
        for status in link.products.values():
            status.error_code = None
            status.refreshed_at = now
            status.last_attempted_at = now
        self._set_state(link, "connected", None)
        session.status = "completed"
        session.chosen_institution_id = inst.institution_id
        session.result_link_id = link.link_id
        return ConnectResult(link=link, institution=inst, exchangeable_token=None, selected=[])

    def complete_link(self, session: LinkSession, account_ids: list[str]) -> ConnectResult:
        """Finish a new link with the accounts the user kept; idempotent for a finished session."""
        if session.status == "completed":
            return self.connect_result(session)
        if session.is_relink or session.chosen_institution_id is None:
            raise ConnectError(400, "invalid_request", "Choose an institution and log in first.")
        chosen = [a for a in session.candidate_accounts if a.account_id in set(account_ids)]
        if not chosen:
            raise ConnectError(400, "no_accounts_selected", "Select at least one account.")
        inst = self.institutions[session.chosen_institution_id]
        link = self._add_link(
            inst=inst,
            customer_id=str(session.customer_user.get("id", "")),
            state="awaiting_token_exchange",
            link_tags=list(session.link_tags) if session.link_tags is not None else None,
            webhook=session.webhook,
            products=self._session_products(session, inst),
            accounts=chosen,
        )
        link.owners = session.owners
        if link.webhook:
            # The link exists from here on; its webhook URL hears about it right away.
            self.emit_webhook(link, "link.state_changed", {"state": link.state})
        token = f"ext_{secrets.token_urlsafe(24)}"
        self.exchangeable_tokens[token] = ExchangeableToken(
            link_id=link.link_id, created_at=self.clock()
        )
        session.status = "completed"
        session.result_link_id = link.link_id
        session.result_token = token
        return ConnectResult(link=link, institution=inst, exchangeable_token=token, selected=chosen)

    def connect_result(self, session: LinkSession) -> ConnectResult:
        assert session.result_link_id is not None
        link = self.links[session.result_link_id]
        inst = self.institutions[link.institution_id]
        return ConnectResult(
            link=link,
            institution=inst,
            exchangeable_token=session.result_token,
            selected=list(link.accounts) if not session.is_relink else [],
        )
