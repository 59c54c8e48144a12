"""Plain records the sandbox keeps in memory. Behaviour lives in :mod:`sandbox.state`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass
class Account:
    account_id: str
    account_type: str
    name: str
    mask: str
    currency: str
    current: float
    available: float | None
    limit: float | None
    balance_date: datetime
    nickname: str | None = None
    # The caller's own id for imported accounts (MoneyKit's `original_id`).
    original_id: str | None = None
    # Full number from `custom_sandbox_data`; generated from the seed when None.
    account_number: str | None = None
    routing_number: str | None = None


@dataclass
class ProductStatus:
    refreshed_at: datetime | None = None
    last_attempted_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Link:
    link_id: str
    # Insertion order; the /links cursor is keyed on it so paging never skips or repeats a link.
    seq: int
    institution_id: str
    customer_id: str
    created_at: datetime
    state: str
    error_code: str | None
    provider: str
    link_tags: list[str] | None
    webhook: str | None
    products: dict[str, ProductStatus]
    accounts: list[Account]
    last_synced_at: datetime | None
    deleted_at: datetime | None = None
    # Account owners from `custom_sandbox_data.owners`; generated from the seed when None.
    owners: list[dict[str, Any]] | None = None
    # Set for links made by POST /links/import: their accounts keep the caller's ids.
    imported: bool = False
    # Transactions and their change log; built on first use (see sandbox.ledger).
    ledger: Any = None
    # How many transaction refreshes ran; seeds each refresh's changes.
    refresh_count: int = 0


SessionStatus = Literal["open", "completed"]


@dataclass
class LinkSession:
    token: str
    created_at: datetime
    expires_at: datetime
    customer_user: dict[str, Any]
    redirect_uri: str
    existing_link_id: str | None
    institution_id: str | None
    webhook: str | None
    link_tags: list[str] | None
    settings: dict[str, Any]
    custom_accounts: list[dict[str, Any]] | None
    status: SessionStatus = "open"
    chosen_institution_id: str | None = None
    candidate_accounts: list[Account] = field(default_factory=list)
    result_link_id: str | None = None
    result_token: str | None = None
    owners: list[dict[str, Any]] | None = None
    connect_features: dict[str, bool] = field(default_factory=dict)
    # MFA step of a credentials login: the institution waiting for the one-time code, and which
    # challenge it is ("mfa": a code; "otp_device": choose where to send one; "otp": that code).
    mfa_institution_id: str | None = None
    challenge: str | None = None
    # Products the user granted on the Permissions screen (None: not asked, all requested).
    granted_products: list[str] | None = None
    # OAuth: the `state` sent to the bank and the bank's answer, kept server-side so that a
    # return page that lost its opener can still finish the flow through /continue.
    oauth_state: str | None = None
    oauth_institution_id: str | None = None
    oauth_outcome: str | None = None  # "approved" | "denied" once the bank answered

    @property
    def is_relink(self) -> bool:
        return self.existing_link_id is not None


@dataclass
class ExchangeableToken:
    link_id: str
    created_at: datetime
    used_at: datetime | None = None


@dataclass
class AccessToken:
    expires_at: datetime
    scope: str
