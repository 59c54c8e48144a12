"""Every knob Linkdesk reads from the environment, in one documented place."""

from __future__ import annotations

from typing import Literal

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
    image_hosts: str = Field(
        default="",
        validation_alias=_env("LINKDESK_IMAGE_HOSTS", "image_hosts"),
        description=(
            "Hosts institution logos may be downloaded from, comma-separated: "
            "https://host[:port] or https://*.domain; http only for a local sandbox "
            "(localhost or a loopback/private address). Unset: https://*.moneykit.com plus the "
            "origins of MONEYKIT_BASE_URL and MONEYKIT_CONNECT_HOST. Other hosts, redirects "
            "elsewhere and hosts that resolve to internal addresses are refused."
        ),
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

    # -- link health ---------------------------------------------------------------------------
    health_stuck_after_minutes: int = Field(
        default=30,
        ge=1,
        le=7 * 24 * 60,
        validation_alias=_env("LINKDESK_HEALTH_STUCK_AFTER_MINUTES", "health_stuck_after_minutes"),
        description=(
            "Minutes a link may stay 'connecting' or 'awaiting_token_exchange' (counted from its "
            "creation) before it is flagged as stuck."
        ),
    )
    health_stale_after_hours: int = Field(
        default=48,
        ge=1,
        le=90 * 24,
        validation_alias=_env("LINKDESK_HEALTH_STALE_AFTER_HOURS", "health_stale_after_hours"),
        description=(
            "Hours without a successful data refresh (MoneyKit's products refreshed_at, else the "
            "link's creation) after which a connected link is flagged as stale."
        ),
    )

    # -- webhooks ------------------------------------------------------------------------------
    webhook_issuer: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_WEBHOOK_ISSUER", "webhook_issuer"),
        description=(
            "Expected 'iss' claim of webhook signatures (https://api.moneykit.com in production); "
            "empty: not checked."
        ),
    )
    webhook_max_age_seconds: int = Field(
        default=300,
        ge=30,
        le=3600,
        validation_alias=_env("LINKDESK_WEBHOOK_MAX_AGE_SECONDS", "webhook_max_age_seconds"),
        description="Oldest accepted webhook signature ('iat'), in seconds.",
    )
    webhook_max_skew_seconds: int = Field(
        default=60,
        ge=0,
        le=300,
        validation_alias=_env("LINKDESK_WEBHOOK_MAX_SKEW_SECONDS", "webhook_max_skew_seconds"),
        description="How far in the future a webhook signature's 'iat' may be (clock skew).",
    )
    webhook_max_body_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=10 * 1024 * 1024,
        validation_alias=_env("LINKDESK_WEBHOOK_MAX_BODY_BYTES", "webhook_max_body_bytes"),
        description="Largest webhook body accepted (413 beyond, refused before it is read).",
    )
    webhook_refused_sample: int = Field(
        default=100,
        ge=0,
        le=100_000,
        validation_alias=_env("LINKDESK_WEBHOOK_REFUSED_SAMPLE", "webhook_refused_sample"),
        description=(
            "Refused webhook requests kept as rows (the newest); every refusal is counted by "
            "reason."
        ),
    )
    webhook_delivery_retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        validation_alias=_env(
            "LINKDESK_WEBHOOK_DELIVERY_RETENTION_DAYS", "webhook_delivery_retention_days"
        ),
        description="Days webhook deliveries (and applied events) are kept.",
    )
    jwks_cache_hours: float = Field(
        default=12.0,
        gt=0,
        le=24,
        validation_alias=_env("LINKDESK_JWKS_CACHE_HOURS", "jwks_cache_hours"),
        description="How long MoneyKit's webhook signing keys (JWKS) are cached, in hours.",
    )
    jwks_min_refetch_seconds: int = Field(
        default=300,
        ge=1,
        le=3600,
        validation_alias=_env("LINKDESK_JWKS_MIN_REFETCH_SECONDS", "jwks_min_refetch_seconds"),
        description=(
            "Minimum seconds between JWKS fetches caused by unknown key ids (stops forged kids "
            "from making Linkdesk hammer MoneyKit)."
        ),
    )

    # -- reconciliation worker -------------------------------------------------------------------
    worker_link_interval_minutes: int = Field(
        default=30,
        ge=1,
        le=7 * 24 * 60,
        validation_alias=_env(
            "LINKDESK_WORKER_LINK_INTERVAL_MINUTES", "worker_link_interval_minutes"
        ),
        description="Minutes between two reads of a healthy link by the worker.",
    )
    worker_unhealthy_interval_minutes: int = Field(
        default=10,
        ge=1,
        le=24 * 60,
        validation_alias=_env(
            "LINKDESK_WORKER_UNHEALTHY_INTERVAL_MINUTES", "worker_unhealthy_interval_minutes"
        ),
        description="Minutes between two reads of a link that is not healthy (errors, stuck).",
    )
    worker_discovery_interval_minutes: int = Field(
        default=60,
        ge=1,
        le=7 * 24 * 60,
        validation_alias=_env(
            "LINKDESK_WORKER_DISCOVERY_INTERVAL_MINUTES", "worker_discovery_interval_minutes"
        ),
        description=(
            "Minutes between two listings of every link (finds links made or deleted elsewhere)."
        ),
    )
    discovery_suspect_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        validation_alias=_env("LINKDESK_DISCOVERY_SUSPECT_SHARE", "discovery_suspect_share"),
        description=(
            "Share of known links a listing may lack before it is treated as suspect (no link is "
            "changed from it, an alert is raised); links it lacks are read one by one instead."
        ),
    )
    discovery_suspect_floor: int = Field(
        default=5,
        ge=0,
        le=100_000,
        validation_alias=_env("LINKDESK_DISCOVERY_SUSPECT_FLOOR", "discovery_suspect_floor"),
        description=(
            "Links a listing may always lack without being suspect, whatever the share "
            "(small stores)."
        ),
    )
    worker_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        le=600,
        validation_alias=_env("LINKDESK_WORKER_POLL_SECONDS", "worker_poll_seconds"),
        description="Longest pause of the worker between two rounds when nothing is due.",
    )
    worker_batch_size: int = Field(
        default=50,
        ge=1,
        le=5000,
        validation_alias=_env("LINKDESK_WORKER_BATCH_SIZE", "worker_batch_size"),
        description="Jobs one worker claims per round.",
    )
    worker_claim_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        validation_alias=_env("LINKDESK_WORKER_CLAIM_SECONDS", "worker_claim_seconds"),
        description=(
            "Lease of a claimed job; a worker that dies leaves its jobs to others after this long."
        ),
    )
    worker_link_reads_per_link_per_minute: int = Field(
        default=15,
        ge=1,
        le=1000,
        validation_alias=_env(
            "LINKDESK_WORKER_LINK_READS_PER_LINK_PER_MINUTE",
            "worker_link_reads_per_link_per_minute",
        ),
        description="GET /links/{id} calls per link per minute (MoneyKit allows 15).",
    )
    # The worker's share of MoneyKit's per-app limits: 95 %, the rest is kept for staff actions
    # (Connect exchanges, relinks). bench/sync_worker.py measures how much of it a worker uses.
    worker_link_reads_per_minute: int = Field(
        default=950,
        ge=1,
        le=100_000,
        validation_alias=_env(
            "LINKDESK_WORKER_LINK_READS_PER_MINUTE", "worker_link_reads_per_minute"
        ),
        description=(
            "GET /links/{id} calls per minute for the whole app (MoneyKit allows 1000; the rest "
            "is left to staff actions)."
        ),
    )
    worker_account_reads_per_link_per_minute: int = Field(
        default=4,
        ge=1,
        le=1000,
        validation_alias=_env(
            "LINKDESK_WORKER_ACCOUNT_READS_PER_LINK_PER_MINUTE",
            "worker_account_reads_per_link_per_minute",
        ),
        description="GET /links/{id}/accounts calls per link per minute (MoneyKit allows 4).",
    )
    worker_account_reads_per_minute: int = Field(
        default=570,
        ge=1,
        le=100_000,
        validation_alias=_env(
            "LINKDESK_WORKER_ACCOUNT_READS_PER_MINUTE", "worker_account_reads_per_minute"
        ),
        description="GET /links/{id}/accounts calls per minute for the whole app (MoneyKit: 600).",
    )
    worker_list_pages_per_minute: int = Field(
        default=570,
        ge=1,
        le=100_000,
        validation_alias=_env(
            "LINKDESK_WORKER_LIST_PAGES_PER_MINUTE", "worker_list_pages_per_minute"
        ),
        description="GET /links pages per minute for discovery (MoneyKit allows 600).",
    )
    worker_max_backoff_minutes: int = Field(
        default=30,
        ge=1,
        le=24 * 60,
        validation_alias=_env("LINKDESK_WORKER_MAX_BACKOFF_MINUTES", "worker_max_backoff_minutes"),
        description="Longest wait before retrying a link after MoneyKit errors (5xx, timeouts).",
    )

    # -- relink and customer links ---------------------------------------------------------------
    relink_lease_minutes: int = Field(
        default=15,
        ge=1,
        le=24 * 60,
        validation_alias=_env("LINKDESK_RELINK_LEASE_MINUTES", "relink_lease_minutes"),
        description=(
            "How long a started relink reserves the link for its staff member (or customer link); "
            "an abandoned reservation expires after this."
        ),
    )
    customer_link_ttl_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 14,
        validation_alias=_env("LINKDESK_CUSTOMER_LINK_TTL_HOURS", "customer_link_ttl_hours"),
        description="Lifetime of a customer relink link, in hours (each link works once).",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_SIGNING_KEY", "signing_key"),
        description=(
            "Secret for signing customer relink links (at least 32 characters). Unset: a random "
            "key is created once in signing_key_file. Never logged or rendered."
        ),
    )
    signing_key_file: str = Field(
        default="var/signing.key",
        validation_alias=_env("LINKDESK_SIGNING_KEY_FILE", "signing_key_file"),
        description=(
            "File holding the generated signing key when LINKDESK_SIGNING_KEY is unset (created "
            "with owner-only permissions)."
        ),
    )
    users: SecretStr | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_USERS", "users"),
        description=(
            'Local staff accounts as JSON: {"alice": {"role": "support", "password_hash": '
            '"$argon2id$..."}} (made by python -m linkdesk user add --print); roles viewer, '
            "support, admin. Old password_sha256 entries still work with a warning. Never logged "
            "or rendered."
        ),
    )
    staff_session_hours: float = Field(
        default=12.0,
        gt=0,
        le=24 * 30,
        validation_alias=_env("LINKDESK_STAFF_SESSION_HOURS", "staff_session_hours"),
        description=(
            "How long a staff sign-in lasts (the session cookie and its row in the store), in "
            "hours; sign-out or an admin ends it sooner."
        ),
    )
    sign_in_window_minutes: int = Field(
        default=15,
        ge=1,
        le=24 * 60,
        validation_alias=_env("LINKDESK_SIGN_IN_WINDOW_MINUTES", "sign_in_window_minutes"),
        description="Window in which failed sign-ins are counted for throttling, in minutes.",
    )
    sign_in_max_failures_per_account: int = Field(
        default=5,
        ge=1,
        validation_alias=_env(
            "LINKDESK_SIGN_IN_MAX_FAILURES_PER_ACCOUNT", "sign_in_max_failures_per_account"
        ),
        description=(
            "Failed sign-ins for one user name within the window after which that name is "
            "refused until the window has passed (every replica, every browser)."
        ),
    )
    sign_in_max_failures_per_client: int = Field(
        default=20,
        ge=1,
        validation_alias=_env(
            "LINKDESK_SIGN_IN_MAX_FAILURES_PER_CLIENT", "sign_in_max_failures_per_client"
        ),
        description=(
            "Failed sign-ins from one client address within the window after which that "
            "address is refused until the window has passed."
        ),
    )
    trust_forwarded_for: bool = Field(
        default=False,
        validation_alias=_env("LINKDESK_TRUST_FORWARDED_FOR", "trust_forwarded_for"),
        description=(
            "Take the client address for sign-in throttling from the X-Forwarded-For header "
            "(only behind a proxy that sets it); otherwise the connection's address is used."
        ),
    )
    default_role: str = Field(
        default="support",
        validation_alias=_env("LINKDESK_DEFAULT_ROLE", "default_role"),
        description=(
            "Role given to an actor passed as a bare name (older callers without sign-in): "
            "viewer, support or admin."
        ),
    )

    # -- email (SMTP) and customer outreach --------------------------------------------------------
    smtp_host: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_SMTP_HOST", "smtp_host"),
        description="SMTP server that sends Linkdesk's email (customer outreach); unset: no email.",
    )
    smtp_port: int = Field(
        default=587,
        ge=1,
        le=65535,
        validation_alias=_env("LINKDESK_SMTP_PORT", "smtp_port"),
        description="Port of the SMTP server (587 for starttls, 465 for tls, 25 for none).",
    )
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        default="starttls",
        validation_alias=_env("LINKDESK_SMTP_TLS", "smtp_tls"),
        description=(
            "How the SMTP connection is encrypted: starttls (upgrade a plain connection, refused "
            "when the server does not offer it), tls (TLS from the start) or none."
        ),
    )
    smtp_username: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_SMTP_USERNAME", "smtp_username"),
        description="SMTP user name; unset: no authentication.",
    )
    smtp_password: SecretStr | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_SMTP_PASSWORD", "smtp_password"),
        description="SMTP password. Never logged or rendered.",
    )
    smtp_sender: str = Field(
        default="Linkdesk <linkdesk@example.com>",
        min_length=3,
        validation_alias=_env("LINKDESK_SMTP_SENDER", "smtp_sender"),
        description="From address of Linkdesk's email, e.g. Support <support@example.com>.",
    )
    smtp_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=300,
        validation_alias=_env("LINKDESK_SMTP_TIMEOUT_SECONDS", "smtp_timeout_seconds"),
        description="Timeout of one SMTP connection or command, in seconds.",
    )
    outreach_emails_per_minute: int = Field(
        default=60,
        ge=1,
        le=10_000,
        validation_alias=_env("LINKDESK_OUTREACH_EMAILS_PER_MINUTE", "outreach_emails_per_minute"),
        description="Relink emails a campaign sends per minute at most (mail providers' limits).",
    )
    public_url: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_PUBLIC_URL", "public_url"),
        description=(
            "Origin of the dashboard as customers reach it (https://linkdesk.example.com), used "
            "in emailed relink links; unset: the address the agent's browser used."
        ),
    )

    run_worker: bool = Field(
        default=True,
        validation_alias=_env("LINKDESK_RUN_WORKER", "run_worker"),
        description=(
            "Run the sync worker inside the dashboard process (server.py). Set to false when "
            "workers run as their own processes (python -m linkdesk worker)."
        ),
    )

    # -- demo mode -----------------------------------------------------------------------------
    demo_mode: bool = Field(
        default=False,
        validation_alias=_env("LINKDESK_DEMO_MODE", "demo_mode"),
        description=(
            "Serve the synthetic demo world (banner, Demo page with scenarios and reset). Only "
            "against the offline sandbox: refused when MONEYKIT_BASE_URL is not one. Admins "
            "can switch it on and off on the Demo page; that choice is kept in the store."
        ),
    )
    demo_links: int = Field(
        default=2000,
        ge=10,
        le=100_000,
        validation_alias=_env("LINKDESK_DEMO_LINKS", "demo_links"),
        description="Links in the demo world that a demo reset builds in the sandbox.",
    )
    demo_seed: int = Field(
        default=2026,
        validation_alias=_env("LINKDESK_DEMO_SEED", "demo_seed"),
        description="Seed of the demo world: the same seed rebuilds the same links and history.",
    )
    demo_history_days: int = Field(
        default=270,
        ge=7,
        le=730,
        validation_alias=_env("LINKDESK_DEMO_HISTORY_DAYS", "demo_history_days"),
        description="Days of synthetic history (Connect sessions, state changes, syncs).",
    )

    # -- alerts and metrics ---------------------------------------------------------------------
    alerts_enabled: bool = Field(
        default=True,
        validation_alias=_env("LINKDESK_ALERTS_ENABLED", "alerts_enabled"),
        description=(
            "Evaluate the alert rules (Alerts page) in every worker and deliver notifications. "
            "Replicas share the work: the database keeps one alert per incident."
        ),
    )
    overview_refresh_seconds: float = Field(
        default=15.0,
        ge=2,
        le=300,
        validation_alias=_env("LINKDESK_OVERVIEW_REFRESH_SECONDS", "overview_refresh_seconds"),
        description=(
            "Seconds between two refreshes of the Overview while it is open (every number on it, "
            "without reloading the page)."
        ),
    )
    alerts_evaluate_seconds: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        validation_alias=_env("LINKDESK_ALERTS_EVALUATE_SECONDS", "alerts_evaluate_seconds"),
        description="Seconds between two evaluations of the alert rules by a worker.",
    )
    alert_slack_webhook_url: SecretStr | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_ALERT_SLACK_WEBHOOK_URL", "alert_slack_webhook_url"),
        description=(
            "Slack-compatible incoming webhook URL for the 'slack' alert channel. Never logged "
            "or rendered."
        ),
    )
    alert_webhook_url: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_ALERT_WEBHOOK_URL", "alert_webhook_url"),
        description=(
            "URL the 'webhook' alert channel posts JSON to, signed with HMAC-SHA256 in the "
            "Linkdesk-Signature header (see Alerts and metrics)."
        ),
    )
    alert_webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_ALERT_WEBHOOK_SECRET", "alert_webhook_secret"),
        description=(
            "Shared secret of the 'webhook' alert channel's HMAC signature (the channel is off "
            "without it). Never logged or rendered."
        ),
    )
    alert_smtp_host: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_ALERT_SMTP_HOST", "alert_smtp_host"),
        description="SMTP server of the 'email' alert channel (the channel is off without it).",
    )
    alert_smtp_port: int = Field(
        default=587,
        ge=1,
        le=65535,
        validation_alias=_env("LINKDESK_ALERT_SMTP_PORT", "alert_smtp_port"),
        description="Port of the alert SMTP server.",
    )
    alert_smtp_starttls: bool = Field(
        default=True,
        validation_alias=_env("LINKDESK_ALERT_SMTP_STARTTLS", "alert_smtp_starttls"),
        description="Upgrade the alert SMTP connection with STARTTLS before sending.",
    )
    alert_smtp_username: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_ALERT_SMTP_USERNAME", "alert_smtp_username"),
        description="User name for the alert SMTP server (no login when unset).",
    )
    alert_smtp_password: SecretStr | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_ALERT_SMTP_PASSWORD", "alert_smtp_password"),
        description="Password for the alert SMTP server. Never logged or rendered.",
    )
    alert_email_from: str = Field(
        default="Linkdesk <linkdesk@localhost.localdomain>",
        validation_alias=_env("LINKDESK_ALERT_EMAIL_FROM", "alert_email_from"),
        description="Sender address of alert emails.",
    )
    alert_email_to: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_ALERT_EMAIL_TO", "alert_email_to"),
        description="Recipients of alert emails, comma-separated.",
    )
    alert_dashboard_url: str | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_ALERT_DASHBOARD_URL", "alert_dashboard_url"),
        description=(
            "Public URL of the dashboard (e.g. https://linkdesk.example.com), for the links in "
            "alert messages; unset: messages carry no link."
        ),
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        validation_alias=_env("LINKDESK_METRICS_TOKEN", "metrics_token"),
        description=(
            "Bearer token GET /metrics asks for (Authorization: Bearer …); unset: open, for a "
            "scraper on a private network. Never logged or rendered."
        ),
    )
    metrics_db_max_age_seconds: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        validation_alias=_env("LINKDESK_METRICS_DB_MAX_AGE_SECONDS", "metrics_db_max_age_seconds"),
        description=(
            "Longest age of the database gauges on /metrics (links per verdict and bank, lags): "
            "each process counts at most this often, in the background, whatever the scrapes."
        ),
    )
    worker_metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        validation_alias=_env("LINKDESK_WORKER_METRICS_PORT", "worker_metrics_port"),
        description=(
            "Port on which python -m linkdesk worker serves GET /metrics (0: none). Protected "
            "by LINKDESK_METRICS_TOKEN too."
        ),
    )
    worker_metrics_host: str = Field(
        default="127.0.0.1",
        validation_alias=_env("LINKDESK_WORKER_METRICS_HOST", "worker_metrics_host"),
        description="Address the worker's metrics port listens on (0.0.0.0 inside a container).",
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
