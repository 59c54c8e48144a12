"""Request bodies the sandbox accepts, validated the way MoneyKit validates them.

Validation failures become 422 ``api_error.request.validation_failed`` with ``validation_errors`` in
MoneyKit's ``{location, message, type}`` form (see :func:`parse_body`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from sandbox.errors import validation_error, validation_failed

PublicLinkState = Literal["connecting", "awaiting_token_exchange", "connected", "deleted", "error"]
PublicLinkError = Literal[
    "system_error",
    "provider_error",
    "institution_error",
    "user_error",
    "auth_expired",
    "no_accounts",
    "user_setup_required",
    "invalid_credentials",
    "user_oauth_denied",
    "user_input_incorrect",
    "incomplete",
]
Product = Literal[
    "accounts", "account_numbers", "identity", "transactions", "investments", "enrichment"
]
ProviderName = Literal["moneykit", "finicity", "plaid", "yodlee", "mx", "akoya"]
CountryCode = Literal["US", "GB", "CA"]


class _Body(BaseModel):
    # Unknown keys are ignored, as MoneyKit does for forward-compatible clients.
    model_config = ConfigDict(extra="ignore")


class CustomerUserIn(_Body):
    id: str = Field(min_length=4, max_length=150)
    email: dict[str, Any] | None = None
    phone: dict[str, Any] | None = None


class ProductSettingsIn(_Body):
    required: bool = False
    require_permission: bool = False
    prefetch: bool = False
    reason: str | None = None


class ProductsSettingsIn(_Body):
    account_numbers: ProductSettingsIn | None = None
    identity: ProductSettingsIn | None = None
    investments: ProductSettingsIn | None = None
    transactions: ProductSettingsIn | None = None


class LinkSessionSettingsIn(_Body):
    providers: list[ProviderName] | None = None
    products: ProductsSettingsIn | None = None
    countries: list[CountryCode] | None = None


class CustomSandboxAccountIn(_Body):
    account_type: str = Field(min_length=1)
    name: str = Field(min_length=1)
    account_number: str = Field(min_length=4)
    routing_number: str | None = None


class CustomSandboxDataIn(_Body):
    accounts: list[CustomSandboxAccountIn] = Field(min_length=1)
    owners: list[dict[str, Any]] | None = None


class CreateLinkSessionIn(_Body):
    customer_user: CustomerUserIn
    redirect_uri: str = Field(min_length=1, max_length=65536)
    existing_link_id: str | None = None
    institution_id: str | None = None
    webhook: str | None = Field(default=None, min_length=1, max_length=65536)
    link_tags: list[str] | None = None
    settings: LinkSessionSettingsIn | None = None
    connect_features: dict[str, bool] | None = None
    custom_sandbox_data: CustomSandboxDataIn | None = None


class ExchangeTokenIn(_Body):
    exchangeable_token: str = Field(min_length=1)


class UpdateLinkIn(_Body):
    webhook: str | None = Field(default=None, min_length=1, max_length=65536)
    link_tags: list[str] | None = None
    tags: list[str] | None = None


class RefreshProductsIn(_Body):
    products: list[Product] = Field(min_length=1)


class RefreshFailureIn(_Body):
    products: list[Product] = Field(min_length=1)
    # One of MoneyKit's LinkProductError values (checked by the links backend).
    error_code: str = "institution_error"


class ForceLinkStateIn(_Body):
    state: PublicLinkState
    error_code: PublicLinkError | None = None


class ScenarioStartIn(_Body):
    institution_id: str | None = None
    # How much faster than real time the timetable plays (2 = twice as fast).
    speed: float = Field(default=1.0, ge=0.1, le=1000)


class ResetIn(_Body):
    seed: int | None = None
    demo_links: int | None = Field(default=None, ge=0, le=100_000)


class AccountImportIn(_Body):
    account_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    nickname: str | None = None
    type: str = Field(min_length=1)
    mask: str | None = None
    balances: dict[str, Any] | None = None


class TransactionImportIn(_Body):
    account_id: str = Field(min_length=1)
    transaction_id: str | None = None
    amount: str
    date: str
    description: str | None = None
    type: str | None = None

    def parsed_date(self) -> dt.date:
        """``YYYY-MM-DD`` or a datetime; also JSON-quoted, as SDK 0.2.3 sends it (§3.2 #8)."""
        text = self.date.strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1]
        if "T" in text or " " in text:
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date()
        return dt.date.fromisoformat(text)


class ImportLinkIn(_Body):
    customer_user: CustomerUserIn
    institution_id: str = Field(min_length=1)
    provider: ProviderName | None = None
    accounts: list[AccountImportIn]
    transactions: list[TransactionImportIn]


class ImportTransactionsIn(_Body):
    transactions: list[TransactionImportIn]


WebhookTestEvent = Literal[
    "link.state_changed",
    "transactions.updates_available",
    "product.state_changed",
    "link.product_refresh",
]


class WebhookTestIn(_Body):
    webhook_event: WebhookTestEvent
    webhook_idempotency_key: str = Field(min_length=1)


class EnrichmentIn(_Body):
    category: str = Field(min_length=1)
    subcategory: str | None = None


class ClockIn(_Body):
    advance_seconds: float | None = None
    offset_seconds: float | None = None


class FaultRuleIn(_Body):
    pattern: str = Field(min_length=1)
    latency_ms: int = Field(default=0, ge=0, le=60_000)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: int = Field(default=1, ge=0, le=3600)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=503, ge=500, le=599)


class FaultsIn(_Body):
    rules: list[FaultRuleIn] = Field(default_factory=list)
    seed: int = 0


class WebhookSettingsIn(_Body):
    drop_rate: float = Field(default=0.0, ge=0, le=1)
    duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    reorder_rate: float = Field(default=0.0, ge=0, le=1)
    reorder_delay_s: float = Field(default=1.0, ge=0, le=60)
    seed: int = 0
    retry_window_s: float | None = Field(default=None, gt=0)
    first_backoff_s: float | None = Field(default=None, gt=0)
    time_scale: float | None = Field(default=None, gt=0)


class RateLimitsIn(_Body):
    enabled: bool


class InstitutionStatusIn(_Body):
    down: bool


class OAuthSettingsIn(_Body):
    cut_opener: bool


class ConnectInstitutionIn(_Body):
    institution_id: str = Field(min_length=1)
    username: str | None = None
    password: str | None = None


class ConnectCompleteIn(_Body):
    account_ids: list[str]


class ConnectMfaIn(_Body):
    code: str


class ConnectOtpDeviceIn(_Body):
    device_id: str


class ConnectPermissionsIn(_Body):
    products: list[str]


class ConnectOAuthFinishIn(_Body):
    redirect_url: str = Field(min_length=1)


ModelT = TypeVar("ModelT", bound=BaseModel)


def validation_errors_from(exc: ValidationError, prefix: str) -> list[dict[str, Any]]:
    return [
        {"location": [prefix, *err["loc"]], "message": err["msg"], "type": err["type"]}
        for err in exc.errors()
    ]


async def parse_body(request: Request, model: type[ModelT], *, optional: bool = False) -> ModelT:
    """Parse a JSON body into ``model`` or raise MoneyKit's 422 validation error."""
    raw = await request.body()
    if not raw.strip():
        if optional:
            return model()
        raise validation_error(["body"], "Field required", "missing")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise validation_error(["body"], "JSON decode error", "json_invalid") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(validation_errors_from(exc, "body")) from exc
