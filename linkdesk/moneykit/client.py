"""Synchronous MoneyKit REST client.

Keyword-only constructor, an injectable ``httpx.Client``, one exception class per failure kind, a
cached access token that is refreshed before it expires (and once after a 401), and jittered
exponential backoff that honours ``Retry-After``. Built like MoneyKit's generated SDKs: the
transport (:mod:`.transport`) and one module per group of endpoints.
"""

from __future__ import annotations

from linkdesk.moneykit.api_institutions import InstitutionsAPI
from linkdesk.moneykit.api_link_data import LinkDataAPI
from linkdesk.moneykit.api_links import LinksAPI
from linkdesk.moneykit.transport import (
    API_VERSION,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
    UNSET,
    RequestEvent,
    Unset,
    endpoint_template,
    parse_retry_after,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_AFTER",
    "MAX_RETRY_DELAY",
    "UNSET",
    "MoneyKitClient",
    "RequestEvent",
    "Unset",
    "endpoint_template",
    "parse_retry_after",
]


class MoneyKitClient(LinksAPI, LinkDataAPI, InstitutionsAPI):
    """Client for MoneyKit's REST API (version ``2023-02-18``).

    Credentials and base URL are taken from the arguments; only when an argument is not passed is
    the environment consulted (``MONEYKIT_CLIENT_ID``, ``MONEYKIT_CLIENT_SECRET``,
    ``MONEYKIT_BASE_URL``), and the base URL finally defaults to ``https://api.moneykit.com``.
    """
