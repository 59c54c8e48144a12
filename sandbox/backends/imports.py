"""MoneyKit's import area: ``POST /links/import`` and ``POST /links/{id}/import/transactions``.

An imported link starts disconnected (``error``/``auth_expired``, protocol §3.4) but readable: its
accounts keep the caller's id as ``original_id`` and its transactions are the ones imported.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sandbox import errors, ledger
from sandbox.backends.base import Clock, Seeded
from sandbox.backends.institutions import InstitutionsBackend
from sandbox.backends.links import LinksBackend
from sandbox.demo import new_id
from sandbox.errors import MoneyKitError
from sandbox.institutions import Institution
from sandbox.models import Account, Link, ProductStatus
from sandbox.schemas import ImportLinkIn, TransactionImportIn

# Data providers whose own institution ids an import may use as "<provider>.<id>".
IMPORT_PROVIDERS = frozenset({"moneykit", "finicity", "plaid", "yodlee", "mx", "akoya"})


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def import_account_type(kind: str) -> str:
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


class ImportsBackend:
    def __init__(
        self,
        *,
        clock: Clock,
        seeded: Seeded,
        catalogue: InstitutionsBackend,
        links: LinksBackend,
    ) -> None:
        self._clock = clock
        self._seeded = seeded
        self._catalogue = catalogue
        self._links = links

    def import_link(self, request: ImportLinkIn) -> Link:
        inst = self.import_institution(request.institution_id)
        now = self._clock()
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
                account_id=new_id(self._seeded.rng, "acc_"),
                account_type=import_account_type(data.type),
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
        txns = self._parse(by_their_id, request.transactions, "transactions")
        products = {
            "accounts": ProductStatus(refreshed_at=now, last_attempted_at=now),
            "transactions": ProductStatus(refreshed_at=now, last_attempted_at=now),
        }
        link = self._links.add_link(
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
        for txn in txns:
            link.ledger.record("created", txn)
        return link

    def import_institution(self, their_id: str) -> Institution:
        """A MoneyKit id, an alias, or a provider's own id as ``<provider>.<their id>``.

        Provider ids (``mx.chase``) name banks the offline catalogue does not have: a known
        provider prefix maps the id, stably, to one of the catalogue's banks served by that
        provider (any bank when none is), so an import written for the real MoneyKit works here.
        """
        try:
            return self._catalogue.institution(their_id)
        except MoneyKitError:
            provider, dot, rest = their_id.partition(".")
            if not dot or not rest or provider not in IMPORT_PROVIDERS:
                raise
        try:
            return self._catalogue.institution(rest)
        except MoneyKitError:
            pass
        ordered = sorted(self._catalogue.institutions.values(), key=lambda i: i.institution_id)
        served = [i for i in ordered if provider in i.providers] or ordered
        digest = hashlib.sha256(their_id.encode()).digest()
        return served[int.from_bytes(digest[:4], "big") % len(served)]

    def import_transactions(self, link_id: str, rows: list[TransactionImportIn]) -> Link:
        link = self._links.live_link(link_id)
        by_their_id = {a.original_id or a.account_id: a for a in link.accounts}
        by_their_id.update({a.account_id: a for a in link.accounts})
        txns = self._parse(by_their_id, rows, "transactions")
        book = self._links.ledger(link)
        for txn in txns:
            book.record("created", txn)
        return link

    def _parse(
        self, accounts: dict[str, Account], rows: list[TransactionImportIn], where: str
    ) -> list[ledger.Txn]:
        """Every row checked before any is recorded: a bad row changes nothing."""
        parsed: list[ledger.Txn] = []
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
            parsed.append(
                ledger.Txn(
                    transaction_id=new_id(self._seeded.rng, "txn_", 20),
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
                )
            )
        return parsed
