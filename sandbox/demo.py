"""Deterministic fake data: accounts for new links and the demo links present at start.

Everything draws from the ``random.Random`` passed in, so the same seed and the same clock give the
same links, ids, tags and balances.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from datetime import datetime, timedelta

from sandbox.institutions import Institution
from sandbox.models import Account, Link, ProductStatus

_ID_ALPHABET = string.ascii_letters + string.digits

# Share of demo links put in each error, the rest are connected. Counts are rounded, not sampled,
# so the mix is exact for a given size.
DEMO_ERROR_SHARES: tuple[tuple[str, float], ...] = (
    ("auth_expired", 0.10),
    ("invalid_credentials", 0.02),
    ("institution_error", 0.02),
)
USER_ACTION_ERRORS = frozenset({"auth_expired", "invalid_credentials"})
CUSTOMER_TAG_PREFIX = "customer:"
_APP_TAGS = ("app:mobile", "app:web")
_DEMO_HISTORY = timedelta(days=270)


def new_id(rng: random.Random, prefix: str, length: int = 22) -> str:
    return prefix + "".join(rng.choice(_ID_ALPHABET) for _ in range(length))


def _money(rng: random.Random, low: float, high: float) -> float:
    return round(rng.uniform(low, high), 2)


def _checking_name(inst: Institution, rng: random.Random) -> str:
    if inst.country == "GB":
        return rng.choice(("Current Account", "Everyday Current Account", "Premier Current"))
    if inst.country == "CA":
        return rng.choice(("Everyday Chequing", "Unlimited Chequing", "Student Chequing"))
    return rng.choice(("Everyday Checking", "Premier Checking", "Essential Checking"))


def _make_account(rng: random.Random, inst: Institution, kind: str, now: datetime) -> Account:
    mask = f"{rng.randrange(10_000):04d}"
    balance_date = now - timedelta(minutes=rng.randrange(5, 600))
    if kind == "depository.checking":
        current = _money(rng, 120, 12_000)
        return Account(
            new_id(rng, "acc_"),
            kind,
            _checking_name(inst, rng),
            mask,
            inst.currency,
            current,
            round(current - _money(rng, 0, min(current, 300)), 2),
            None,
            balance_date,
        )
    if kind == "depository.savings":
        current = _money(rng, 500, 60_000)
        name = rng.choice(("High-Yield Savings", "Rainy Day Savings", "Goal Saver"))
        return Account(
            new_id(rng, "acc_"),
            kind,
            name,
            mask,
            inst.currency,
            current,
            current,
            None,
            balance_date,
        )
    if kind == "liability.credit_card":
        limit = float(rng.choice((2_000, 5_000, 7_500, 10_000, 15_000, 20_000)))
        owed = _money(rng, 0, limit * 0.6)
        name = rng.choice(("Platinum Rewards Card", "Cash Back Card", "Travel Rewards Card"))
        return Account(
            new_id(rng, "acc_"),
            kind,
            name,
            mask,
            inst.currency,
            owed,
            round(limit - owed, 2),
            limit,
            balance_date,
        )
    if kind == "liability.loan":
        owed = _money(rng, 2_000, 35_000)
        return Account(
            new_id(rng, "acc_"),
            kind,
            "Auto Loan",
            mask,
            inst.currency,
            owed,
            None,
            None,
            balance_date,
        )
    current = _money(rng, 2_000, 250_000)
    name = rng.choice(("Individual Brokerage", "Retirement Account", "Managed Portfolio"))
    return Account(
        new_id(rng, "acc_"),
        "investment.brokerage",
        name,
        mask,
        inst.currency,
        current,
        None,
        None,
        balance_date,
    )


def make_accounts(
    rng: random.Random, inst: Institution, count: int, now: datetime
) -> list[Account]:
    """``count`` accounts (1-4): always a checking account first, then distinct other kinds."""
    others = ["depository.savings", "liability.credit_card", "liability.loan"]
    if "investments" in inst.products:
        others.append("investment.brokerage")
    kinds = ["depository.checking", *rng.sample(others, k=min(len(others), max(0, count - 1)))]
    return [_make_account(rng, inst, kind, now) for kind in kinds]


def custom_accounts(
    rng: random.Random, inst: Institution, specs: Sequence[dict[str, object]], now: datetime
) -> list[Account]:
    """Accounts described by a link session's ``custom_sandbox_data``."""
    accounts = []
    for spec in specs:
        number = str(spec["account_number"])
        kind = str(spec["account_type"])
        current = _money(rng, 100, 10_000)
        accounts.append(
            Account(
                new_id(rng, "acc_"),
                kind,
                str(spec["name"]),
                number[-4:],
                inst.currency,
                current,
                current if kind.startswith("depository") else None,
                None,
                now,
                account_number=number,
                routing_number=str(spec["routing_number"]) if spec.get("routing_number") else None,
            )
        )
    return accounts


def default_products(inst: Institution, *, with_identity: bool) -> list[str]:
    wanted = ["accounts", "transactions", "investments"]
    if with_identity:
        wanted.append("identity")
    chosen = [p for p in wanted if p in inst.products]
    # Investment-only institutions keep investments; everyone else keeps it only if nothing else.
    if "transactions" in chosen and "investments" in chosen:
        chosen.remove("investments")
    return chosen


def customer_ids(count: int) -> list[str]:
    return [f"cust_{i:04d}" for i in range(1, count + 1)]


def build_demo_links(
    rng: random.Random, institutions: Sequence[Institution], count: int, now: datetime
) -> list[Link]:
    """``count`` links made as the company's customer app would have made them.

    About two links per customer, every institution used at least once (when count allows), and the
    error mix of :data:`DEMO_ERROR_SHARES`. Links are returned oldest first, with ``seq`` set.
    """
    if count <= 0:
        return []
    customers = customer_ids(max(1, (count + 1) // 2))
    owner_index = list(range(len(customers))) + [
        rng.randrange(len(customers)) for _ in range(count - len(customers))
    ]
    rng.shuffle(owner_index)

    weights = [3 if inst.is_featured else 1 for inst in institutions]
    picks = list(institutions[:count]) + rng.choices(
        list(institutions), weights=weights, k=max(0, count - len(institutions))
    )
    rng.shuffle(picks)

    # Errors that need the user go only to institutions that log in with credentials, so every
    # demo relink can be finished with the sandbox's test credentials.
    errors: list[str | None] = [None] * count
    order = rng.sample(range(count), k=count)
    for code, share in DEMO_ERROR_SHARES:
        wanted = round(count * share)
        candidates = [
            i
            for i in order
            if errors[i] is None
            and (code not in USER_ACTION_ERRORS or picks[i].auth == "credentials")
        ]
        for slot in candidates[:wanted]:
            errors[slot] = code

    drafts = []
    for i in range(count):
        inst = picks[i]
        created_at = now - timedelta(seconds=rng.uniform(3_600, _DEMO_HISTORY.total_seconds()))
        drafts.append((created_at, i, inst))
    drafts.sort(key=lambda d: (d[0], d[1]))

    links = []
    for seq, (created_at, i, inst) in enumerate(drafts, start=1):
        error_code = errors[i]
        customer = customers[owner_index[i]]
        age = (now - created_at).total_seconds()
        if error_code is None:
            last_synced = now - timedelta(seconds=rng.uniform(300, min(age, 6 * 3_600)))
            failed_at = None
        else:
            failed_at = now - timedelta(seconds=rng.uniform(600, min(age, 30 * 86_400)))
            last_synced = failed_at - timedelta(seconds=rng.uniform(60, 3_600))
            last_synced = max(last_synced, created_at)
        products: dict[str, ProductStatus] = {}
        for product in default_products(inst, with_identity=rng.random() < 0.3):
            status = ProductStatus(
                refreshed_at=last_synced,
                last_attempted_at=failed_at or last_synced,
                settings={"required": product == "accounts", "prefetch": True},
            )
            if error_code in ("auth_expired", "institution_error"):
                status.error_code = error_code
            products[product] = status
        links.append(
            Link(
                link_id=new_id(rng, "mk_"),
                seq=seq,
                institution_id=inst.institution_id,
                customer_id=customer,
                created_at=created_at,
                state="connected" if error_code is None else "error",
                error_code=error_code,
                provider=inst.provider,
                link_tags=[f"{CUSTOMER_TAG_PREFIX}{customer}", rng.choice(_APP_TAGS)],
                webhook=None,
                products=products,
                accounts=make_accounts(rng, inst, rng.randint(1, 4), last_synced),
                last_synced_at=last_synced,
            )
        )
    return links
