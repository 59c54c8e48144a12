"""Transactions of a link and the change log behind ``/transactions/sync``.

Every change to a link's transactions (created, updated, removed) is appended to the link's log
with a growing version number; a sync cursor is the last version a client has seen. Because the
log only grows, paging while new changes arrive never skips or repeats a change: later changes get
higher versions and come on later pages.

Pending transactions follow MoneyKit's documented rule: they only ever appear in ``created`` and
are replaced on each refresh without being reported as ``removed``. Clients drop and replace them.

All generation draws from ``random.Random`` instances seeded with strings built from the sandbox
seed and the link/account ids, so the same seed gives the same transactions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from sandbox.models import Account

ChangeOp = Literal["created", "updated", "removed"]
HISTORY_DAYS = 90
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"

# (description, merchant, category, subcategory, low, high, credit?)
_SPENDING: tuple[tuple[str, str | None, str, str, float, float, bool], ...] = (
    ("GREENLEAF MARKET #{n}", "Greenleaf Market", "food_and_drink", "groceries", 18, 160, False),
    ("DAILY GRIND COFFEE", "Daily Grind", "food_and_drink", "coffee", 3, 9, False),
    (
        "HARBOUR KITCHEN",
        "Harbour Kitchen",
        "food_and_drink",
        "eating_out_and_takeaways",
        14,
        90,
        False,
    ),
    ("METRO TRANSIT FARE", "Metro Transit", "transport", "public_transport", 2, 30, False),
    ("VOLTAGE FUEL {n}", "Voltage Fuel", "transport", "vehicle_fuel_and_charging", 25, 85, False),
    (
        "STREAMBOX SUBSCRIPTION",
        "Streambox",
        "media_and_telecoms",
        "tv_streaming_services",
        9,
        18,
        False,
    ),
    ("NORTHWIND ENERGY BILL", "Northwind Energy", "utilities", "utilities_energy", 45, 180, False),
    ("PAGEWELL BOOKS", "Pagewell Books", "entertainment", "books_and_reading", 8, 45, False),
    (
        "CORNER PHARMACY",
        "Corner Pharmacy",
        "health_and_personal_care",
        "pharmacies_and_health_products",
        6,
        60,
        False,
    ),
    ("ATM WITHDRAWAL", None, "banking", "cash_withdrawals", 20, 200, False),
)
_INCOME: tuple[tuple[str, str | None, str, str, float, float, bool], ...] = (
    ("PAYROLL ACME WIDGETS", "Acme Widgets", "income", "employment_income", 1400, 3800, True),
    ("INTEREST PAYMENT", None, "income", "investment_income", 0.5, 25, True),
    ("TRANSFER FROM SAVINGS", None, "transfers", "transfers_in", 50, 900, True),
)


@dataclass(frozen=True)
class Txn:
    transaction_id: str
    account_id: str
    amount: str  # never negative; `type` says the direction
    type: Literal["credit", "debit"]
    currency: str
    date: date
    description: str
    raw_description: str
    pending: bool
    category: str
    subcategory: str | None
    merchant: str | None
    original_id: str | None = None


@dataclass
class Change:
    version: int
    op: ChangeOp
    transaction_id: str
    snapshot: Txn | None  # None for "removed"


@dataclass
class Ledger:
    txns: dict[str, Txn] = field(default_factory=dict)
    log: list[Change] = field(default_factory=list)
    version: int = 0
    # Last day covered by generated (posted) history.
    covered_until: date | None = None

    def record(self, op: ChangeOp, txn: Txn) -> None:
        self.version += 1
        if op == "removed":
            self.txns.pop(txn.transaction_id, None)
            self.log.append(Change(self.version, op, txn.transaction_id, None))
        else:
            self.txns[txn.transaction_id] = txn
            self.log.append(Change(self.version, op, txn.transaction_id, txn))

    def drop_pending(self) -> list[Txn]:
        """Forget the current pending transactions without logging a removal (see module doc)."""
        gone = [t for t in self.txns.values() if t.pending]
        for txn in gone:
            del self.txns[txn.transaction_id]
        return gone


def _txn_id(rng: random.Random) -> str:
    return "txn_" + "".join(rng.choice(_ID_CHARS) for _ in range(20))


def _draw(rng: random.Random, account: Account, day: date, *, pending: bool = False) -> Txn | None:
    """One plausible transaction for ``account`` on ``day`` (None for accounts without any)."""
    kind = account.account_type
    if kind.startswith("investment") or kind == "liability.loan":
        return None
    if kind == "depository.savings":
        pool = _INCOME[1:]
    elif kind == "liability.credit_card":
        pool = _SPENDING[:-1]
    else:
        pool = _SPENDING + _INCOME[:1] if rng.random() < 0.9 else _INCOME
    desc, merchant, category, subcategory, low, high, credit = rng.choice(pool)
    text = desc.replace("{n}", str(rng.randint(100, 999)))
    amount = round(rng.uniform(low, high), 2)
    return Txn(
        transaction_id=_txn_id(rng),
        account_id=account.account_id,
        amount=f"{amount:.2f}",
        type="credit" if credit else "debit",
        currency=account.currency,
        date=day,
        description=text.title() if merchant is None else merchant,
        raw_description=text,
        pending=pending,
        category=category,
        subcategory=subcategory,
        merchant=merchant,
    )


def _posted_days(rng: random.Random, account: Account, first: date, last: date) -> list[Txn]:
    out: list[Txn] = []
    day = first
    while day <= last:
        for _ in range(rng.choice((0, 1, 1, 2))):
            txn = _draw(rng, account, day)
            if txn is not None:
                out.append(txn)
        day += timedelta(days=1)
    return out


def _pending(rng: random.Random, account: Account, today: date) -> list[Txn]:
    out = []
    for _ in range(rng.choice((0, 1, 2))):
        txn = _draw(rng, account, today - timedelta(days=rng.randint(0, 1)), pending=True)
        if txn is not None:
            out.append(txn)
    return out


def build_history(seed: int, link_id: str, accounts: list[Account], until: datetime) -> Ledger:
    """``HISTORY_DAYS`` of posted transactions up to ``until`` plus a few pending ones."""
    ledger = Ledger()
    last = until.date() - timedelta(days=1)
    first = last - timedelta(days=HISTORY_DAYS - 1)
    for account in accounts:
        rng = random.Random(f"{seed}:{link_id}:{account.account_id}:history")
        for txn in _posted_days(rng, account, first, last):
            ledger.record("created", txn)
        for txn in _pending(rng, account, until.date()):
            ledger.record("created", txn)
    ledger.covered_until = last
    return ledger


def refresh(
    ledger: Ledger, seed: int, link_id: str, count: int, accounts: list[Account], now: datetime
) -> int:
    """Bring the ledger up to ``now`` the way a bank refresh does; returns the number of changes.

    Pending transactions post (as new transactions with new ids) or disappear, new days get
    posted transactions, new pending ones appear, and now and then a recent posted transaction is
    corrected (``updated``) or reversed (``removed``).
    """
    rng = random.Random(f"{seed}:{link_id}:refresh:{count}")
    before = ledger.version
    today = now.date()
    for old in ledger.drop_pending():
        if rng.random() < 0.8:
            posted = replace(old, transaction_id=_txn_id(rng), pending=False)
            ledger.record("created", posted)
    start = (ledger.covered_until or today - timedelta(days=1)) + timedelta(days=1)
    last = today - timedelta(days=1)
    for account in accounts:
        for txn in _posted_days(rng, account, start, last):
            ledger.record("created", txn)
    ledger.covered_until = max(last, ledger.covered_until or last)
    recent = sorted(
        (t for t in ledger.txns.values() if not t.pending), key=lambda t: (t.date, t.transaction_id)
    )[-20:]
    if recent and rng.random() < 0.6:
        target = rng.choice(recent)
        ledger.record("updated", replace(target, description=target.description + " (corrected)"))
    if len(recent) > 5 and rng.random() < 0.3:
        ledger.record("removed", rng.choice(recent[:-1]))
    for account in accounts:
        for txn in _pending(rng, account, today):
            ledger.record("created", txn)
    return ledger.version - before


@dataclass
class SyncPage:
    created: list[Txn]
    updated: list[Txn]
    removed: list[str]
    next_version: int
    has_more: bool


def sync_page(ledger: Ledger, after: int, size: int) -> SyncPage:
    """Up to ``size`` log entries after version ``after``, merged per transaction.

    Within one page a transaction appears once: created-then-updated is reported as created with
    its latest state, anything followed by a removal as removed (or not at all when it was also
    created in this page). Created pending transactions that were since replaced are skipped:
    a client would have to drop them anyway.
    """
    entries = [c for c in ledger.log if c.version > after]
    chunk = entries[:size]
    merged: dict[str, tuple[ChangeOp, Txn | None, bool]] = {}
    for change in chunk:
        seen = merged.get(change.transaction_id)
        created_here = change.op == "created" or (seen is not None and seen[2])
        if change.op == "removed":
            merged[change.transaction_id] = ("removed", None, created_here)
        else:
            op: ChangeOp = "created" if created_here else "updated"
            merged[change.transaction_id] = (op, change.snapshot, created_here)
    created: list[Txn] = []
    updated: list[Txn] = []
    removed: list[str] = []
    for txn_id, (op, snapshot, created_here) in merged.items():
        if op == "removed":
            if not created_here:
                removed.append(txn_id)
        elif snapshot is not None and snapshot.pending and txn_id not in ledger.txns:
            continue
        elif op == "created" and snapshot is not None:
            created.append(snapshot)
        elif snapshot is not None:
            updated.append(snapshot)
    next_version = chunk[-1].version if chunk else after
    return SyncPage(created, updated, removed, next_version, len(entries) > len(chunk))


def txn_json(txn: Txn) -> dict[str, Any]:
    enrichment: dict[str, Any] = {"category": {"value": txn.category, "confidence": 90}}
    if txn.subcategory:
        enrichment["subcategory"] = {"value": txn.subcategory, "confidence": 85}
    if txn.merchant:
        enrichment["merchant"] = {"name": txn.merchant, "confidence": 80}
    return {
        "transaction_id": txn.transaction_id,
        "account_id": txn.account_id,
        "amount": txn.amount,
        "type": txn.type,
        "currency": txn.currency,
        "date": txn.date.isoformat(),
        "datetime": datetime.combine(txn.date, time(12, 0)).isoformat() + "+00:00",
        "description": txn.description,
        "raw_description": txn.raw_description,
        "pending": txn.pending,
        "enrichment": enrichment,
        "original_id": txn.original_id,
    }


def newest_first(txns: list[Txn]) -> list[Txn]:
    return sorted(txns, key=lambda t: (t.date, t.transaction_id), reverse=True)
