"""Typed views of MoneyKit responses.

The models accept unknown keys (MoneyKit adds fields over time, and the emulator adds logo keys)
and keep enum-like fields as plain strings, so that a new link state shows up in the dashboard
instead of breaking a sync.
"""

from __future__ import annotations

from datetime import UTC, datetime
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


class LinkProductStatus(_Model):
    refreshed_at: UTCDateTime | None = None
    last_attempted_at: UTCDateTime | None = None
    error_code: str | None = None
    error_message: str | None = None
    unavailable: str | None = None


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
    def products_refreshed_at(self) -> datetime | None:
        stamps = [p.refreshed_at for p in self.products.values() if p and p.refreshed_at]
        return max(stamps) if stamps else None


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
