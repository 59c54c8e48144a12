"""Typed views of MoneyKit responses.

The models accept unknown keys (MoneyKit adds fields over time, and the emulator adds logo keys)
and keep enum-like fields as plain strings, so that a new link state shows up in the dashboard
instead of breaking a sync.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator


def _as_utc(value: datetime) -> datetime:
    # MoneyKit's examples send naive timestamps; they are UTC, and mixing naive with aware values
    # would make comparisons fail later.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UTCDateTime = Annotated[datetime, AfterValidator(_as_utc)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def _none_to_list(value: Any) -> Any:
    return [] if value is None else value


# What a product's refresh fields say (MoneyKit reports them as timestamps and an error):
REFRESH_FAILED = "failed"  # the last attempt failed (error_code set)
REFRESH_PENDING = "pending"  # an attempt started after the last success and has not landed
REFRESH_NOT_FETCHED = "not_fetched"  # never fetched and never tried (no prefetch, no refresh)
REFRESH_FETCHED = "fetched"
# The worst first: a link's refresh issue is the worst state among its products.
REFRESH_ISSUES = (REFRESH_FAILED, REFRESH_PENDING)


class LinkProductStatus(_Model):
    refreshed_at: UTCDateTime | None = None
    last_attempted_at: UTCDateTime | None = None
    error_code: str | None = None
    error_message: str | None = None
    unavailable: str | None = None

    @property
    def refresh_state(self) -> str:
        if self.error_code:
            return REFRESH_FAILED
        if self.last_attempted_at is not None and (
            self.refreshed_at is None or self.last_attempted_at > self.refreshed_at
        ):
            return REFRESH_PENDING
        if self.refreshed_at is None:
            return REFRESH_NOT_FETCHED
        return REFRESH_FETCHED


class Link(_Model):
    """MoneyKit's ``LinkCommon``."""

    link_id: str
    institution_id: str
    institution_name: str
    institution_avatar: str | None = None
    state: str
    error_code: str | None = None
    last_synced_at: UTCDateTime | None = None
    provider: str | None = None
    link_tags: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    webhook: str | None = None
    products: dict[str, LinkProductStatus | None] = Field(default_factory=dict)
    available_products: list[str] = Field(default_factory=list)

    _lists = field_validator("link_tags", "tags", "available_products", mode="before")(
        _none_to_list
    )

    @field_validator("products", mode="before")
    @classmethod
    def _products(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def all_tags(self) -> list[str]:
        """``link_tags`` and the older ``tags``, without duplicates, in first-seen order."""
        return list(dict.fromkeys([*self.link_tags, *self.tags]))

    @property
    def customer_email(self) -> str | None:
        """``customer_user.email.address`` when MoneyKit sends the link's customer user."""
        user = (self.model_extra or {}).get("customer_user")
        if not isinstance(user, dict):
            return None
        email = user.get("email")
        address = email.get("address") if isinstance(email, dict) else email
        return address.strip() if isinstance(address, str) and address.strip() else None

    @property
    def products_refreshed_at(self) -> datetime | None:
        stamps = [p.refreshed_at for p in self.products.values() if p and p.refreshed_at]
        return max(stamps) if stamps else None

    @property
    def refresh_issue(self) -> str | None:
        """``failed`` if a product's last refresh failed, else ``pending`` if one is in progress."""
        states = {p.refresh_state for p in self.products.values() if p is not None}
        return next((issue for issue in REFRESH_ISSUES if issue in states), None)


class LinkListItem(_Model):
    link_id: str
    created_at: UTCDateTime | None = None


class LinkListPage(_Model):
    links: list[LinkListItem] = Field(default_factory=list)
    next_cursor: str | None = None

    _links = field_validator("links", mode="before")(_none_to_list)


class AccountBalances(_Model):
    currency: str | None = None
    available: float | None = None
    current: float | None = None
    limit: float | None = None
    balance_date: UTCDateTime | None = None


class Account(_Model):
    account_id: str
    account_type: str | None = None
    name: str
    nickname: str | None = None
    account_mask: str | None = None
    balances: AccountBalances = Field(default_factory=AccountBalances)
    closed: bool | None = None

    @field_validator("balances", mode="before")
    @classmethod
    def _balances(cls, value: Any) -> Any:
        return {} if value is None else value


class AccountsResponse(_Model):
    accounts: list[Account] = Field(default_factory=list)
    link: Link | None = None

    _accounts = field_validator("accounts", mode="before")(_none_to_list)


class Institution(_Model):
    """REST institution plus the image keys MoneyKit's Connect side (and our emulator) carry."""

    institution_id: str
    institution_id_aliases: list[str] = Field(default_factory=list)
    name: str
    country: str | None = None
    domain: str | None = None
    color: str | None = None
    color_dark: str | None = None
    is_featured: bool | None = None
    logo: str | None = None
    logo_dark: str | None = None
    avatar: str | None = None
    avatar_dark: str | None = None

    _aliases = field_validator("institution_id_aliases", mode="before")(_none_to_list)


class InstitutionPage(_Model):
    institutions: list[Institution] = Field(default_factory=list)
    next_cursor: str | None = None

    _institutions = field_validator("institutions", mode="before")(_none_to_list)


class LinkSession(_Model):
    link_session_token: str = Field(repr=False)


class ExchangeResult(_Model):
    link_id: str | None = None
    link: Link

    @property
    def resolved_link_id(self) -> str:
        """``link.link_id`` is the documented one; top-level ``link_id`` is deprecated."""
        return self.link.link_id


class AccessToken(_Model):
    access_token: str = Field(repr=False)
    token_type: str | None = None
    expires_in: float = 3600.0


# -- access token introspection and signing keys ----------------------------------------------


class AppInfo(_Model):
    app_id: str | None = None
    name: str | None = None
    id: str | None = None
    app_name: str | None = None


class AppClient(_Model):
    """``GET /auth/introspect``: which client and application the credentials belong to."""

    client_id: str
    client_name: str | None = None
    scope: str | None = None
    app: AppInfo | None = None
    disabled_at: UTCDateTime | None = None


# -- account details ---------------------------------------------------------------------------


class AccountResponse(_Model):
    """``GET /links/{id}/accounts/{account_id}``."""

    account: Account
    link: Link | None = None


class AchNumber(_Model):
    account_number: str
    routing_number: str
    wire_routing_number: str | None = None


class EftNumber(_Model):
    account_number: str
    institution_number: str
    branch_number: str


class BacsNumber(_Model):
    account_number: str
    sort_code: str


class InternationalNumber(_Model):
    iban: str
    bic: str


class AccountNumbers(_Model):
    ach: list[AchNumber] = Field(default_factory=list)
    eft: list[EftNumber] = Field(default_factory=list)
    bacs: list[BacsNumber] = Field(default_factory=list)
    international: list[InternationalNumber] = Field(default_factory=list)

    _lists = field_validator("ach", "eft", "bacs", "international", mode="before")(_none_to_list)


class AccountWithNumbers(Account):
    numbers: AccountNumbers = Field(default_factory=AccountNumbers)


class AccountNumbersResponse(_Model):
    accounts: list[AccountWithNumbers] = Field(default_factory=list)
    link: Link | None = None

    _accounts = field_validator("accounts", mode="before")(_none_to_list)


class OwnerAddress(_Model):
    city: str | None = None
    country: str | None = None
    postal_code: str | None = None
    region: str | None = None
    street: str | None = None
    primary: bool | None = None


class OwnerPhoneNumber(_Model):
    number: str
    primary: bool | None = None
    type: str | None = None


class OwnerEmail(_Model):
    address: str
    primary: bool | None = None


class Owner(_Model):
    names: list[str] = Field(default_factory=list)
    addresses: list[OwnerAddress] = Field(default_factory=list)
    phone_numbers: list[OwnerPhoneNumber] = Field(default_factory=list)
    emails: list[OwnerEmail] = Field(default_factory=list)

    _lists = field_validator("names", "addresses", "phone_numbers", "emails", mode="before")(
        _none_to_list
    )


class AccountIdentity(Account):
    owners: list[Owner] = Field(default_factory=list)

    _owners = field_validator("owners", mode="before")(_none_to_list)


class IdentityResponse(_Model):
    accounts: list[AccountIdentity] = Field(default_factory=list)
    link: Link | None = None

    _accounts = field_validator("accounts", mode="before")(_none_to_list)


# -- transactions ------------------------------------------------------------------------------


class EnrichmentValue(_Model):
    value: str
    confidence: float | None = None


class EnrichmentParty(_Model):
    id: str | None = None
    name: str | None = None
    logo: str | None = None
    confidence: float | None = None


class EnrichmentRecurrence(_Model):
    frequency: str | None = None
    next_predicted_date: date | None = None


class TransactionEnrichment(_Model):
    category: EnrichmentValue | None = None
    subcategory: EnrichmentValue | None = None
    merchant: EnrichmentParty | None = None
    processor: EnrichmentParty | None = None
    recurrence: EnrichmentRecurrence | None = None


class Transaction(_Model):
    """A bank transaction. ``amount`` is a decimal string, never negative; ``type`` (``credit`` =
    money in, ``debit`` = money out) gives the direction."""

    transaction_id: str
    account_id: str
    amount: str
    type: str
    currency: str | None = None
    date: date
    datetime: UTCDateTime | None = None
    description: str | None = None
    raw_description: str | None = None
    pending: bool = False
    category: str | None = None
    enrichment: TransactionEnrichment | None = None
    original_id: str | None = None

    @property
    def signed_amount(self) -> Decimal:
        """The amount as a Decimal, negative for money going out."""
        value = Decimal(self.amount)
        return -value if self.type == "debit" else value


class TransactionsPage(_Model):
    """``GET /links/{id}/transactions`` (page/size paging, newest first)."""

    total: int
    page: int
    size: int
    transactions: list[Transaction] = Field(default_factory=list)
    accounts: list[Account] = Field(default_factory=list)
    link: Link | None = None

    _lists = field_validator("transactions", "accounts", mode="before")(_none_to_list)


class SyncCursor(_Model):
    next: str | None = None


class TransactionChanges(_Model):
    created: list[Transaction] = Field(default_factory=list)
    updated: list[Transaction] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)

    _lists = field_validator("created", "updated", "removed", mode="before")(_none_to_list)


class TransactionSyncPage(_Model):
    """``GET /links/{id}/transactions/sync``: keep ``cursor.next`` and pass it back next time."""

    transactions: TransactionChanges = Field(default_factory=TransactionChanges)
    accounts: list[Account] = Field(default_factory=list)
    cursor: SyncCursor = Field(default_factory=SyncCursor)
    has_more: bool = False
    link: Link | None = None

    _accounts = field_validator("accounts", mode="before")(_none_to_list)

    @property
    def next_cursor(self) -> str | None:
        return self.cursor.next or None


class EnrichmentCorrection(_Model):
    """``POST /links/{id}/transactions/{txn_id}/enrichment``: the corrected transaction."""

    transactions: list[Transaction] = Field(default_factory=list)
    accounts: list[Account] = Field(default_factory=list)
    link: Link | None = None
    cursor: SyncCursor | None = None

    _lists = field_validator("transactions", "accounts", mode="before")(_none_to_list)


# -- investments -------------------------------------------------------------------------------


class Security(_Model):
    security_id: str
    name: str | None = None
    type: str | None = None
    currency: str | None = None
    ticker: str | None = None
    isin: str | None = None
    sedol: str | None = None
    close_price: str | None = None
    close_date: date | None = None


class Holding(_Model):
    """Money values are decimal strings, as MoneyKit sends them."""

    account_id: str
    security_id: str
    quantity: str
    price: str | None = None
    price_datetime: UTCDateTime | None = None
    value: str | None = None
    cost_basis: str | None = None


class HoldingsResponse(_Model):
    holdings: list[Holding] = Field(default_factory=list)
    securities: list[Security] = Field(default_factory=list)
    accounts: list[Account] = Field(default_factory=list)
    link: Link | None = None

    _lists = field_validator("holdings", "securities", "accounts", mode="before")(_none_to_list)


class InvestmentTransaction(_Model):
    """``amount`` is a decimal string; positive means money out (a buy or a withdrawal)."""

    investment_transaction_id: str
    account_id: str
    amount: str
    date: date
    datetime: UTCDateTime | None = None
    description: str | None = None
    type: str
    fees: str | None = None
    forex_rate: str | None = None
    price: str | None = None
    quantity: str | None = None
    security_id: str | None = None


class InvestmentTransactionsPage(_Model):
    total: int
    page: int
    size: int
    investment_transactions: list[InvestmentTransaction] = Field(default_factory=list)
    securities: list[Security] = Field(default_factory=list)
    accounts: list[Account] = Field(default_factory=list)
    link: Link | None = None

    _lists = field_validator("investment_transactions", "securities", "accounts", mode="before")(
        _none_to_list
    )


# -- users (our customer_user.id) --------------------------------------------------------------


class UserLinks(_Model):
    """``GET /users/{id}/links``: the customer's links by link id."""

    links: dict[str, Link] = Field(default_factory=dict)


class UserAccounts(_Model):
    """``GET /users/{id}/accounts``: the customer's accounts, grouped by link id."""

    links: dict[str, list[Account]] = Field(default_factory=dict)


class UserTransactionsPage(_Model):
    total: int
    page: int
    size: int
    transactions: list[Transaction] = Field(default_factory=list)
    accounts: list[Account] = Field(default_factory=list)

    _lists = field_validator("transactions", "accounts", mode="before")(_none_to_list)


# -- webhooks ----------------------------------------------------------------------------------


class WebhookTestResult(_Model):
    delivery_token: str


# -- import (request bodies) -------------------------------------------------------------------


class ImportAccount(_Model):
    """One account of ``POST /links/import``; ``account_id`` is ours, unique in the batch."""

    account_id: str
    name: str
    type: str
    nickname: str | None = None
    mask: str | None = None
    balances: AccountBalances = Field(default_factory=AccountBalances)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class ImportTransaction(_Model):
    """One imported transaction. Unlike read transactions, ``amount`` is signed here: positive is
    money in, negative money out."""

    account_id: str
    amount: str
    date: date
    transaction_id: str | None = None
    description: str | None = None
    type: str | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Any:
        # Floats would carry binary rounding into a money value; take exact types only.
        if isinstance(value, float):
            raise ValueError("pass the amount as a string or Decimal, not a float")
        if isinstance(value, Decimal | int):
            value = str(value)
        if isinstance(value, str):
            try:
                parsed = Decimal(value)
            except ArithmeticError as exc:
                raise ValueError("amount must be a decimal number") from exc
            if not parsed.is_finite():
                raise ValueError("amount must be a finite decimal number")
        return value

    @field_validator("date", mode="before")
    @classmethod
    def _day(cls, value: Any) -> Any:
        # MoneyKit takes a plain calendar day; a datetime is reduced to its own date.
        return value.date() if isinstance(value, datetime) else value

    def to_json(self) -> dict[str, Any]:
        body = self.model_dump(mode="json", exclude_none=True)
        body["date"] = self.date.isoformat()
        return body
