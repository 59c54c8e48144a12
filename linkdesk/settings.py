"""Every knob Linkdesk reads from the environment, in one documented place."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str, field: str) -> AliasChoices:
    # Accept both the documented environment name and the field name, so that code and tests can
    # write ``Settings(database_url=...)`` while deployments set ``DATABASE_URL``.
    return AliasChoices(name, field)


class Settings(BaseSettings):
    """Linkdesk configuration.

    Values come from keyword arguments first, then environment variables (names listed in each
    field's ``validation_alias``), then the defaults below, which suit a local sandbox.
    """

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    moneykit_base_url: str = Field(
        default="http://localhost:8611",
        validation_alias=_env("MONEYKIT_BASE_URL", "moneykit_base_url"),
        description="Base URL of the MoneyKit REST API (no trailing slash).",
    )
    moneykit_connect_host: str = Field(
        default="http://localhost:8611",
        validation_alias=_env("MONEYKIT_CONNECT_HOST", "moneykit_connect_host"),
        description="Origin of the hosted Connect UI (scheme://host:port, no path, no slash).",
    )
    moneykit_client_id: str = Field(
        default="linkdesk_sandbox_client",
        validation_alias=_env("MONEYKIT_CLIENT_ID", "moneykit_client_id"),
        description="MoneyKit API client id.",
    )
    moneykit_client_secret: SecretStr = Field(
        default=SecretStr("linkdesk_sandbox_secret"),
        validation_alias=_env("MONEYKIT_CLIENT_SECRET", "moneykit_client_secret"),
        description="MoneyKit API client secret. Never logged or rendered.",
    )
    moneykit_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        validation_alias=_env("MONEYKIT_TIMEOUT_SECONDS", "moneykit_timeout_seconds"),
        description="Overall timeout of one MoneyKit HTTP request, in seconds.",
    )
    moneykit_max_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        validation_alias=_env("MONEYKIT_MAX_RETRIES", "moneykit_max_retries"),
        description="Retries for 408/409/429/5xx and connection errors (0 turns retries off).",
    )
    database_url: str = Field(
        default="sqlite:///var/linkdesk.db",
        validation_alias=_env("DATABASE_URL", "database_url"),
        description="SQLAlchemy URL of the store (SQLite file by default, PostgreSQL to scale).",
    )
    redirect_uri: str = Field(
        default="http://localhost:8501/oauth_return",
        validation_alias=_env("LINKDESK_REDIRECT_URI", "redirect_uri"),
        description="Page MoneyKit sends the user back to after an OAuth bank (no query string).",
    )
    webhook_url: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_WEBHOOK_URL", "webhook_url"),
        description="URL MoneyKit posts webhooks to; sent with every link session when set.",
    )
    customer_tag_prefix: str = Field(
        default="customer:",
        min_length=1,
        validation_alias=_env("LINKDESK_CUSTOMER_TAG_PREFIX", "customer_tag_prefix"),
        description="Link tag prefix that carries the customer id (e.g. customer:cust_0001).",
    )
    staff_user: str = Field(
        default="operator",
        min_length=1,
        validation_alias=_env("LINKDESK_STAFF_USER", "staff_user"),
        description="Name recorded as actor when no signed-in user is known.",
    )
    sync_concurrency: int = Field(
        default=4,
        ge=1,
        le=32,
        validation_alias=_env("LINKDESK_SYNC_CONCURRENCY", "sync_concurrency"),
        description="Links read in parallel by a sync run (kept low for MoneyKit's rate limits).",
    )

    sync_links_per_minute: int = Field(
        default=275,
        ge=1,
        le=100_000,
        validation_alias=_env("LINKDESK_SYNC_LINKS_PER_MINUTE", "sync_links_per_minute"),
        description="Links a sync reads per minute (two calls each; under MoneyKit's 600/min).",
    )

    @classmethod
    def fields_documentation(cls) -> list[tuple[str, str]]:
        """(environment variable, description) for every field, for docs and their test."""
        rows: list[tuple[str, str]] = []
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            env_name = name.upper()
            if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
                env_name = alias.choices[0]
            rows.append((env_name, info.description or ""))
        return rows
