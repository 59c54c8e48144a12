"""A link as a row of the dashboard: its verdict, and its institution's checked colours and logos.

The Links list and the link detail build their rows here, from the columns :data:`LIST_COLUMNS`
reads (plain columns rather than ORM entities: building identity-mapped objects, and decoding
the institutions' JSON no row shows, was most of a page's cost).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from linkdesk.health import Health, HealthThresholds, assess_link
from linkdesk.store.models import Institution, Link
from linkdesk.validation import safe_hex_color, safe_logo_url

__all__ = ["LIST_COLUMNS", "LinkRow", "LinkRows", "ListedInstitution", "split_list_row"]


@dataclass(frozen=True, slots=True)
class LinkRow:
    link_id: str
    customer_id: str | None
    institution_id: str
    institution_name: str
    institution_color: str | None
    institution_color_dark: str | None
    institution_logo: str | None
    institution_logo_dark: str | None
    institution_avatar: str | None
    institution_avatar_dark: str | None
    state: str
    error_code: str | None
    health: Health
    provider: str | None
    tags: list[str]
    created_at: datetime | None
    last_synced_at: datetime | None
    products_refreshed_at: datetime | None
    updated_at: datetime
    # Why the row has its health: an error code, stuck_<state>, stale… (a PLAYBOOKS key when one
    # exists, see linkdesk.health.playbook_for).
    health_reason: str = ""
    last_webhook_at: datetime | None = None


_LIST_LINK_FIELDS = (
    "link_id", "customer_id", "institution_id", "state", "error_code", "provider", "tags",
    "created_at", "last_synced_at", "products_refreshed_at", "discovered_at", "updated_at",
    "last_webhook_at", "refresh_issue",
)  # fmt: skip
_LIST_INSTITUTION_FIELDS = (
    "institution_id", "name", "color", "color_dark", "logo", "logo_dark", "avatar", "avatar_dark",
)  # fmt: skip
_LINK_COLUMNS = [getattr(Link, name) for name in _LIST_LINK_FIELDS]
_INSTITUTION_COLUMNS = [
    getattr(Institution, name).label(f"i_{name}") for name in _LIST_INSTITUTION_FIELDS
]


@dataclass(frozen=True, slots=True)
class ListedInstitution:
    institution_id: str
    name: str
    color: str | None
    color_dark: str | None
    logo: str | None
    logo_dark: str | None
    avatar: str | None
    avatar_dark: str | None


def split_list_row(row: sa.Row[Any]) -> tuple[Any, ListedInstitution]:
    values = row._mapping
    institution = ListedInstitution(*(values[f"i_{name}"] for name in _LIST_INSTITUTION_FIELDS))
    return row, institution


LIST_COLUMNS = [*_LINK_COLUMNS, *_INSTITUTION_COLUMNS]


class LinkRows:
    """Builds :class:`LinkRow` values; ``thresholds`` decide the time-dependent verdicts."""

    def __init__(self, thresholds: HealthThresholds) -> None:
        self._thresholds = thresholds
        # Institution colours and logos as validated for the last row that carried them: a page
        # of links repeats the same few institutions, and checking a data: URI character by
        # character for every row cost more than the query itself. Keyed by institution, holding
        # the raw values too, so a changed logo is checked again (a few hundred entries at most).
        self._images: dict[str, tuple[tuple[str | None, ...], tuple[str | None, ...]]] = {}

    def _images_of(self, institution: Any) -> tuple[str | None, ...]:
        raw = (
            institution.color,
            institution.color_dark,
            institution.logo,
            institution.logo_dark,
            institution.avatar,
            institution.avatar_dark,
        )
        known = self._images.get(institution.institution_id)
        if known is not None and known[0] == raw:
            return known[1]
        checked = (
            safe_hex_color(raw[0]),
            safe_hex_color(raw[1]),
            *(safe_logo_url(value) for value in raw[2:]),
        )
        self._images[institution.institution_id] = (raw, checked)
        return checked

    def row(self, link: Any, institution: Any, now: datetime) -> LinkRow:
        """``link`` and ``institution``: ORM objects, or rows with the same attribute names."""
        verdict = assess_link(link, now=now, thresholds=self._thresholds)
        color, color_dark, logo, logo_dark, avatar, avatar_dark = self._images_of(institution)
        return LinkRow(
            link_id=link.link_id,
            customer_id=link.customer_id,
            institution_id=link.institution_id,
            institution_name=institution.name,
            institution_color=color,
            institution_color_dark=color_dark,
            institution_logo=logo,
            institution_logo_dark=logo_dark,
            institution_avatar=avatar,
            institution_avatar_dark=avatar_dark,
            state=link.state,
            error_code=link.error_code,
            health=verdict.health,
            provider=link.provider,
            tags=list(link.tags or []),
            created_at=link.created_at,
            last_synced_at=link.last_synced_at,
            products_refreshed_at=link.products_refreshed_at,
            updated_at=link.updated_at,
            health_reason=verdict.reason,
            last_webhook_at=link.last_webhook_at,
        )
