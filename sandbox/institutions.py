"""The sandbox's institution catalogue.

Three institutions mirror MoneyKit's own sandbox test banks; the rest are fictional banks so the
dashboard has varied names, colours and countries to render. Colours are stored for light mode and a
brighter variant for dark backgrounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CREDS_BANK_ID = "moneykit-creds-bank"
INSTANT_BANK_ID = "moneykit-instant-bank"
OAUTH_BANK_ID = "moneykit-oauth-bank"

GOOD_USERNAME = "user_good"
GOOD_PASSWORD = "pass_good"

AuthMethod = Literal["credentials", "instant", "oauth"]
Country = Literal["US", "GB", "CA"]

ALL_PRODUCTS = ("accounts", "account_numbers", "identity", "transactions", "investments")


@dataclass(frozen=True)
class Institution:
    institution_id: str
    name: str
    country: Country
    domain: str
    color: str
    color_dark: str
    initials: str
    is_featured: bool
    auth: AuthMethod
    providers: tuple[str, ...]
    products: tuple[str, ...] = ALL_PRODUCTS
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def currency(self) -> str:
        return {"US": "USD", "GB": "GBP", "CA": "CAD"}[self.country]

    @property
    def provider(self) -> str:
        return self.providers[0]


def _inst(
    institution_id: str,
    name: str,
    country: Country,
    domain: str,
    color: str,
    color_dark: str,
    initials: str,
    *,
    featured: bool = False,
    auth: AuthMethod = "credentials",
    providers: tuple[str, ...] = ("mx",),
    products: tuple[str, ...] = ALL_PRODUCTS,
    aliases: tuple[str, ...] = (),
) -> Institution:
    return Institution(
        institution_id=institution_id,
        name=name,
        country=country,
        domain=domain,
        color=color,
        color_dark=color_dark,
        initials=initials,
        is_featured=featured,
        auth=auth,
        providers=providers,
        products=products,
        aliases=aliases,
    )


# Order matters: it is the default listing order of GET /institutions and of the Connect picker.
CATALOGUE: tuple[Institution, ...] = (
    _inst(
        CREDS_BANK_ID,
        "Credentials Bank",
        "US",
        "moneykit.com",
        "#0b63ce",
        "#4f9bff",
        "CB",
        featured=True,
        providers=("moneykit",),
    ),
    _inst(
        INSTANT_BANK_ID,
        "Instant Bank",
        "US",
        "moneykit.com",
        "#0f8a5f",
        "#3ccf95",
        "IB",
        featured=True,
        auth="instant",
        providers=("moneykit",),
    ),
    _inst(
        OAUTH_BANK_ID,
        "OAuth Bank",
        "US",
        "moneykit.com",
        "#6b3fd1",
        "#a68bff",
        "OB",
        featured=True,
        auth="oauth",
        providers=("moneykit",),
    ),
    _inst(
        "harborline-bank",
        "Harborline Bank",
        "US",
        "harborline.example",
        "#00507a",
        "#3fa9e0",
        "HB",
        featured=True,
        providers=("mx", "finicity"),
        aliases=("mx.harborline",),
    ),
    _inst(
        "summit-ridge-cu",
        "Summit Ridge Credit Union",
        "US",
        "summitridgecu.example",
        "#2e6b30",
        "#6fcf73",
        "SR",
        providers=("finicity",),
    ),
    _inst(
        "evergreen-national",
        "Evergreen National Bank",
        "US",
        "evergreennational.example",
        "#1d5c4a",
        "#52c7a5",
        "EN",
        featured=True,
        providers=("plaid", "mx"),
    ),
    _inst(
        "copperfield-savings",
        "Copperfield Savings",
        "US",
        "copperfield.example",
        "#b5562b",
        "#f08a5d",
        "CS",
        providers=("mx",),
        products=("accounts", "account_numbers", "identity", "transactions"),
    ),
    _inst(
        "bluewater-federal",
        "Bluewater Federal",
        "US",
        "bluewater.example",
        "#1565c0",
        "#64a8ff",
        "BF",
        featured=True,
        providers=("yodlee",),
    ),
    _inst(
        "northstar-trust",
        "Northstar Trust",
        "US",
        "northstartrust.example",
        "#1b2a4a",
        "#8aa4d6",
        "NT",
        providers=("akoya", "plaid"),
        products=("accounts", "identity", "investments"),
    ),
    _inst(
        "prairie-mutual",
        "Prairie Mutual",
        "US",
        "prairiemutual.example",
        "#c28f00",
        "#ffd24d",
        "PM",
        providers=("finicity",),
    ),
    _inst(
        "lakeshore-community",
        "Lakeshore Community Bank",
        "US",
        "lakeshorebank.example",
        "#00796b",
        "#4dd0c1",
        "LC",
        providers=("mx",),
        products=("accounts", "account_numbers", "transactions"),
    ),
    _inst(
        "redwood-capital",
        "Redwood Capital Bank",
        "US",
        "redwoodcapital.example",
        "#9b1c1c",
        "#f26d6d",
        "RC",
        featured=True,
        providers=("plaid",),
    ),
    _inst(
        "granite-state-savings",
        "Granite State Savings",
        "US",
        "granitestate.example",
        "#4a4f57",
        "#b4bac4",
        "GS",
        providers=("yodlee", "mx"),
    ),
    _inst(
        "aurora-digital",
        "Aurora Digital Bank",
        "US",
        "auroradigital.example",
        "#7b1fa2",
        "#d185f0",
        "AD",
        providers=("plaid",),
    ),
    _inst(
        "maple-leaf-financial",
        "Maple Leaf Financial",
        "CA",
        "mapleleaf.example",
        "#c62828",
        "#ff7a7a",
        "ML",
        featured=True,
        providers=("finicity",),
    ),
    _inst(
        "saint-lawrence-trust",
        "Saint Lawrence Trust",
        "CA",
        "stlawrencetrust.example",
        "#283593",
        "#8c9eff",
        "SL",
        providers=("mx",),
    ),
    _inst(
        "thistle-crown",
        "Thistle & Crown Bank",
        "GB",
        "thistlecrown.example",
        "#5e2750",
        "#d48cc4",
        "TC",
        featured=True,
        providers=("plaid",),
        products=("accounts", "account_numbers", "identity", "transactions"),
    ),
    _inst(
        "kestrel-bank",
        "Kestrel Bank",
        "GB",
        "kestrel.example",
        "#006d77",
        "#48cad6",
        "KB",
        providers=("yodlee",),
    ),
)


def catalogue_by_id() -> dict[str, Institution]:
    return {inst.institution_id: inst for inst in CATALOGUE}
