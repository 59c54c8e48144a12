"""Account numbers, owners and investments of sandbox links, derived from the seed.

Nothing here is stored: every value is recomputed from ``random.Random`` seeded with the sandbox
seed and the account id, so reads are stable and the same seed gives the same data.
"""

from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta
from typing import Any

from sandbox.models import Account, Link

_FIRST = ("Alex", "Jordan", "Sam", "Taylor", "Morgan", "Riley", "Casey", "Jamie", "Avery", "Quinn")
_LAST = ("Rivera", "Chen", "Okafor", "Novak", "Lindqvist", "Haddad", "Moreau", "Tanaka", "Byrne")
_STREETS = ("Maple Avenue", "Harbour Road", "Station Street", "Elm Close", "Kingfisher Way")
_CITIES = {
    "US": (("Springfield", "IL", "62701"), ("Riverton", "WY", "82501")),
    "CA": (("Kingston", "ON", "K7L 3N6"), ("Brandon", "MB", "R7A 1A1")),
    "GB": (("Harrogate", "North Yorkshire", "HG1 1AA"), ("Bath", "Somerset", "BA1 1AA")),
}

# A small fictional security list; tickers are made up so nothing looks like market data.
SECURITIES: tuple[dict[str, Any], ...] = (
    {
        "security_id": "sec_sbx_total",
        "name": "Sandbox Total Market Index",
        "type": "etf",
        "ticker": "SBXT",
        "price": 231.40,
    },
    {
        "security_id": "sec_sbx_bond",
        "name": "Sandbox Aggregate Bond Fund",
        "type": "fund",
        "ticker": "SBXB",
        "price": 98.12,
    },
    {
        "security_id": "sec_sbx_intl",
        "name": "Sandbox International Equity",
        "type": "etf",
        "ticker": "SBXI",
        "price": 57.85,
    },
    {
        "security_id": "sec_acme",
        "name": "Acme Widgets Inc.",
        "type": "equity",
        "ticker": "ACMW",
        "price": 143.07,
    },
    {"security_id": "sec_cash", "name": "Cash Sweep", "type": "cash", "ticker": None, "price": 1.0},
)


def _rng(seed: int, account: Account, purpose: str) -> random.Random:
    return random.Random(f"{seed}:{account.account_id}:{purpose}")


def _aba_check_digit(first8: str) -> str:
    weights = (3, 7, 1) * 3
    total = sum(int(d) * w for d, w in zip(first8, weights[:8], strict=True))
    return str((10 - total % 10) % 10)


def no_account_numbers() -> dict[str, Any]:
    """The ``numbers`` object of an account whose numbers were not fetched yet."""
    return {"ach": [], "eft": [], "bacs": [], "international": []}


def account_numbers_json(seed: int, account: Account, country: str) -> dict[str, Any]:
    """The ``numbers`` object; only depository accounts have numbers, in the country's scheme."""
    numbers: dict[str, list[dict[str, str]]] = {
        "ach": [],
        "eft": [],
        "bacs": [],
        "international": [],
    }
    if not account.account_type.startswith("depository"):
        return numbers
    rng = _rng(seed, account, "numbers")
    number = account.account_number or (
        f"{rng.randrange(10**5, 10**6)}{rng.randrange(10**3, 10**4)}{account.mask}"
    )
    if country == "US":
        routing = account.routing_number
        if not routing:
            first8 = f"0{rng.randrange(10**6, 10**7)}"
            routing = first8 + _aba_check_digit(first8)
        numbers["ach"].append(
            {"account_number": number, "routing_number": routing, "wire_routing_number": routing}
        )
    elif country == "CA":
        numbers["eft"].append(
            {
                "account_number": number[-7:],
                "institution_number": f"{rng.randrange(1, 1000):03d}",
                "branch_number": f"{rng.randrange(10**4, 10**5)}",
            }
        )
    else:
        sort_code = f"{rng.randrange(10, 100)}{rng.randrange(10, 100)}{rng.randrange(10, 100)}"
        digits = number[-8:].rjust(8, "0")
        numbers["bacs"].append({"account_number": digits, "sort_code": sort_code})
        numbers["international"].append(
            {"iban": f"GB{rng.randrange(10, 100)}SBXB{sort_code}{digits}", "bic": "SBXBGB2L"}
        )
    return numbers


def owners_json(seed: int, link: Link, account: Account, country: str) -> list[dict[str, Any]]:
    """Owners from the link session's ``custom_sandbox_data``, else one seeded owner."""
    if link.owners:
        return [
            {
                "names": list(owner.get("names") or []),
                "addresses": list(owner.get("addresses") or []),
                "phone_numbers": list(owner.get("phone_numbers") or []),
                "emails": list(owner.get("emails") or []),
            }
            for owner in link.owners
        ]
    # Seeded by the customer, so all of one customer's accounts share an owner.
    rng = random.Random(f"{seed}:{link.customer_id}:owner")
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    city, region, postal = rng.choice(_CITIES.get(country, _CITIES["US"]))
    return [
        {
            "names": [f"{first} {last}"],
            "addresses": [
                {
                    "street": f"{rng.randint(1, 999)} {rng.choice(_STREETS)}",
                    "city": city,
                    "region": region,
                    "postal_code": postal,
                    "country": country,
                    "primary": True,
                }
            ],
            "phone_numbers": [
                {"number": f"+1555{rng.randrange(10**6, 10**7)}", "primary": True, "type": "mobile"}
            ],
            "emails": [{"address": f"{first}.{last}@example.com".lower(), "primary": True}],
        }
    ]


def _security_json(sec: dict[str, Any], currency: str, today: date) -> dict[str, Any]:
    return {
        "security_id": sec["security_id"],
        "name": sec["name"],
        "type": sec["type"],
        "currency": currency,
        "ticker": sec["ticker"],
        "close_price": f"{sec['price']:.2f}",
        "close_date": (today - timedelta(days=1)).isoformat(),
    }


def holdings(
    seed: int, accounts: list[Account], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Holdings of the investment accounts, and the securities they reference."""
    out: list[dict[str, Any]] = []
    used: dict[str, dict[str, Any]] = {}
    for account in accounts:
        if not account.account_type.startswith("investment"):
            continue
        rng = _rng(seed, account, "holdings")
        for sec in rng.sample(SECURITIES, k=rng.randint(2, 4)):
            quantity = round(rng.uniform(1, 400), 3) if sec["type"] != "cash" else 1.0
            price = sec["price"] if sec["type"] != "cash" else round(rng.uniform(50, 5000), 2)
            value = round(quantity * price, 2)
            out.append(
                {
                    "account_id": account.account_id,
                    "security_id": sec["security_id"],
                    "quantity": f"{quantity:.3f}",
                    "price": f"{price:.2f}",
                    "price_datetime": datetime.combine(
                        now.date() - timedelta(days=1), time(21, 0)
                    ).isoformat()
                    + "+00:00",
                    "value": f"{value:.2f}",
                    "cost_basis": f"{value * rng.uniform(0.7, 1.1):.2f}",
                }
            )
            used[sec["security_id"]] = _security_json(sec, account.currency, now.date())
    return out, list(used.values())


def investment_transactions(
    seed: int, accounts: list[Account], now: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """About two investment transactions a week over 90 days, newest first."""
    out: list[dict[str, Any]] = []
    used: dict[str, dict[str, Any]] = {}
    for account in accounts:
        if not account.account_type.startswith("investment"):
            continue
        rng = _rng(seed, account, "investment-transactions")
        for n in range(26):
            day = now.date() - timedelta(days=rng.randint(1, 90))
            sec = rng.choice(SECURITIES[:4])
            kind = rng.choice(("buy", "buy", "sell", "cash.dividend", "fee"))
            quantity = round(rng.uniform(1, 25), 3)
            price = sec["price"] * rng.uniform(0.9, 1.1)
            gross = round(quantity * price, 2)
            row: dict[str, Any] = {
                "investment_transaction_id": f"itx_{account.account_id[4:14]}_{n:03d}",
                "account_id": account.account_id,
                "date": day.isoformat(),
                "datetime": datetime.combine(day, time(15, 30)).isoformat() + "+00:00",
                "type": kind,
                "fees": "0.00",
            }
            if kind in ("buy", "sell"):
                # MoneyKit's sign: positive amounts take money out of the account.
                row.update(
                    amount=f"{gross if kind == 'buy' else -gross:.2f}",
                    description=f"{kind.upper()} {sec['ticker']}",
                    price=f"{price:.2f}",
                    quantity=f"{quantity if kind == 'buy' else -quantity:.3f}",
                    security_id=sec["security_id"],
                )
                used[sec["security_id"]] = _security_json(sec, account.currency, now.date())
            elif kind == "cash.dividend":
                row.update(
                    amount=f"{-round(gross / 40, 2):.2f}",
                    description=f"DIVIDEND {sec['ticker']}",
                    security_id=sec["security_id"],
                )
                used[sec["security_id"]] = _security_json(sec, account.currency, now.date())
            else:
                row.update(amount=f"{rng.uniform(1, 15):.2f}", description="ACCOUNT FEE")
            out.append(row)
    out.sort(key=lambda r: (r["date"], r["investment_transaction_id"]), reverse=True)
    return out, list(used.values())
