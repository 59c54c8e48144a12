"""JSON shapes the sandbox sends, built from its records.

REST shapes follow the `moneykit` 0.2.3 SDK models exactly (strict types, required keys); the
Connect-side institution follows the launcher's ``Institution`` typing (protocol doc §2.13).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sandbox.images import ImageKind
from sandbox.institutions import Institution
from sandbox.models import Account, Link, ProductStatus


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def asset_url(base_url: str, institution_id: str, kind: ImageKind) -> str:
    return f"{base_url}/assets/institutions/{institution_id}/{kind}.svg"


def _images(base_url: str, inst: Institution) -> dict[str, str]:
    return {
        kind: asset_url(base_url, inst.institution_id, kind)
        for kind in ("logo", "logo_dark", "avatar", "avatar_dark")
    }


def institution_json(inst: Institution, base_url: str) -> dict[str, Any]:
    return {
        "institution_id": inst.institution_id,
        "institution_id_aliases": list(inst.aliases),
        "name": inst.name,
        "country": inst.country,
        "domain": inst.domain,
        "color": inst.color,
        "color_dark": inst.color_dark,
        "is_featured": inst.is_featured,
        # Not in the 0.2.3 model; the SDK keeps them in additional_properties.
        **_images(base_url, inst),
    }


def connect_institution_json(inst: Institution, base_url: str) -> dict[str, Any]:
    return {
        "id": inst.institution_id,
        "name": inst.name,
        "country": inst.country,
        "domain": inst.domain,
        "color": inst.color,
        "color_dark": inst.color_dark,
        **_images(base_url, inst),
        "search_group": "primary" if inst.is_featured else "secondary",
        "is_featured": inst.is_featured,
        "providers": list(inst.providers),
    }


def _product_json(status: ProductStatus, *, transactions: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "refreshed_at": iso(status.refreshed_at),
        "last_attempted_at": iso(status.last_attempted_at),
        "error_code": status.error_code,
        "error_message": status.error_message,
        "settings": {
            "required": bool(status.settings.get("required", False)),
            "require_permission": bool(status.settings.get("require_permission", False)),
            "prefetch": bool(status.settings.get("prefetch", False)),
            "reason": status.settings.get("reason"),
        },
    }
    if transactions:
        # Required by the SDK's TransactionsLinkProduct although MoneyKit calls it deprecated:
        # true once the history was fetched (prefetch or the first refresh).
        body["has_history"] = status.refreshed_at is not None
    return body


def link_json(link: Link, inst: Institution, base_url: str) -> dict[str, Any]:
    products = {
        name: _product_json(status, transactions=name == "transactions")
        for name, status in link.products.items()
    }
    tags = list(link.link_tags) if link.link_tags is not None else None
    return {
        "link_id": link.link_id,
        "institution_id": inst.institution_id,
        "institution_name": inst.name,
        "institution_avatar": asset_url(base_url, inst.institution_id, "avatar"),
        "state": link.state,
        "error_code": link.error_code,
        "last_synced_at": iso(link.last_synced_at),
        "provider": link.provider,
        "link_tags": tags,
        "tags": list(tags) if tags is not None else None,
        "webhook": link.webhook,
        "products": products,
        "available_products": list(inst.products),
    }


def account_json(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "account_type": account.account_type,
        "name": account.name,
        "nickname": account.nickname,
        "account_mask": account.mask,
        "balances": {
            "currency": account.currency,
            "available": account.available,
            "current": account.current,
            "limit": account.limit,
            "balance_date": iso(account.balance_date),
        },
        "original_id": account.original_id,
        "closed": False,
    }


_CONNECT_ACCOUNT_TYPES = {
    "depository.checking": "depository.checking",
    "depository.savings": "depository.savings",
    "depository.prepaid": "depository.prepaid",
    "depository.cash": "depository.cash",
    "liability.credit_card": "credit_card",
    "liability.loan": "loan.general",
    "liability.mortgage": "loan.mortgage",
}


def connect_account_type(account_type: str) -> str:
    """Map a REST account type onto the launcher's narrower ``AccountType`` list."""
    if account_type in _CONNECT_ACCOUNT_TYPES:
        return _CONNECT_ACCOUNT_TYPES[account_type]
    if account_type.startswith("depository."):
        return "depository.other"
    if account_type.startswith("liability."):
        return "loan.other"
    if account_type.startswith("investment"):
        return "investment"
    return "other"


def connect_account_json(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id,
        "account_type": connect_account_type(account.account_type),
        "name": account.name,
        "account_mask": account.mask,
    }
