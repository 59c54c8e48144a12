"""Settings: documented fields, environment names, safe defaults, the secret never shown."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from linkdesk.settings import Settings

ENV_NAMES = {
    "moneykit_base_url": "MONEYKIT_BASE_URL",
    "moneykit_connect_host": "MONEYKIT_CONNECT_HOST",
    "image_hosts": "LINKDESK_IMAGE_HOSTS",
    "moneykit_client_id": "MONEYKIT_CLIENT_ID",
    "moneykit_client_secret": "MONEYKIT_CLIENT_SECRET",
    "moneykit_timeout_seconds": "MONEYKIT_TIMEOUT_SECONDS",
    "moneykit_max_retries": "MONEYKIT_MAX_RETRIES",
    "database_url": "DATABASE_URL",
    "redirect_uri": "LINKDESK_REDIRECT_URI",
    "webhook_url": "LINKDESK_WEBHOOK_URL",
    "customer_tag_prefix": "LINKDESK_CUSTOMER_TAG_PREFIX",
    "staff_user": "LINKDESK_STAFF_USER",
    "sync_concurrency": "LINKDESK_SYNC_CONCURRENCY",
    "sync_links_per_minute": "LINKDESK_SYNC_LINKS_PER_MINUTE",
    "health_stuck_after_minutes": "LINKDESK_HEALTH_STUCK_AFTER_MINUTES",
    "health_stale_after_hours": "LINKDESK_HEALTH_STALE_AFTER_HOURS",
    "webhook_issuer": "LINKDESK_WEBHOOK_ISSUER",
    "webhook_max_age_seconds": "LINKDESK_WEBHOOK_MAX_AGE_SECONDS",
    "webhook_max_skew_seconds": "LINKDESK_WEBHOOK_MAX_SKEW_SECONDS",
    "webhook_max_body_bytes": "LINKDESK_WEBHOOK_MAX_BODY_BYTES",
    "webhook_refused_sample": "LINKDESK_WEBHOOK_REFUSED_SAMPLE",
    "webhook_delivery_retention_days": "LINKDESK_WEBHOOK_DELIVERY_RETENTION_DAYS",
    "jwks_cache_hours": "LINKDESK_JWKS_CACHE_HOURS",
    "jwks_min_refetch_seconds": "LINKDESK_JWKS_MIN_REFETCH_SECONDS",
    "worker_link_interval_minutes": "LINKDESK_WORKER_LINK_INTERVAL_MINUTES",
    "worker_unhealthy_interval_minutes": "LINKDESK_WORKER_UNHEALTHY_INTERVAL_MINUTES",
    "worker_discovery_interval_minutes": "LINKDESK_WORKER_DISCOVERY_INTERVAL_MINUTES",
    "discovery_suspect_share": "LINKDESK_DISCOVERY_SUSPECT_SHARE",
    "discovery_suspect_floor": "LINKDESK_DISCOVERY_SUSPECT_FLOOR",
    "worker_poll_seconds": "LINKDESK_WORKER_POLL_SECONDS",
    "worker_batch_size": "LINKDESK_WORKER_BATCH_SIZE",
    "worker_claim_seconds": "LINKDESK_WORKER_CLAIM_SECONDS",
    "worker_link_reads_per_link_per_minute": "LINKDESK_WORKER_LINK_READS_PER_LINK_PER_MINUTE",
    "worker_link_reads_per_minute": "LINKDESK_WORKER_LINK_READS_PER_MINUTE",
    "worker_account_reads_per_link_per_minute": "LINKDESK_WORKER_ACCOUNT_READS_PER_LINK_PER_MINUTE",
    "worker_account_reads_per_minute": "LINKDESK_WORKER_ACCOUNT_READS_PER_MINUTE",
    "worker_list_pages_per_minute": "LINKDESK_WORKER_LIST_PAGES_PER_MINUTE",
    "worker_max_backoff_minutes": "LINKDESK_WORKER_MAX_BACKOFF_MINUTES",
    "relink_lease_minutes": "LINKDESK_RELINK_LEASE_MINUTES",
    "customer_link_ttl_hours": "LINKDESK_CUSTOMER_LINK_TTL_HOURS",
    "signing_key": "LINKDESK_SIGNING_KEY",
    "signing_key_file": "LINKDESK_SIGNING_KEY_FILE",
    "users": "LINKDESK_USERS",
    "staff_session_hours": "LINKDESK_STAFF_SESSION_HOURS",
    "sign_in_window_minutes": "LINKDESK_SIGN_IN_WINDOW_MINUTES",
    "sign_in_max_failures_per_account": "LINKDESK_SIGN_IN_MAX_FAILURES_PER_ACCOUNT",
    "sign_in_max_failures_per_client": "LINKDESK_SIGN_IN_MAX_FAILURES_PER_CLIENT",
    "trust_forwarded_for": "LINKDESK_TRUST_FORWARDED_FOR",
    "default_role": "LINKDESK_DEFAULT_ROLE",
    "run_worker": "LINKDESK_RUN_WORKER",
    "demo_mode": "LINKDESK_DEMO_MODE",
    "demo_links": "LINKDESK_DEMO_LINKS",
    "demo_seed": "LINKDESK_DEMO_SEED",
    "demo_history_days": "LINKDESK_DEMO_HISTORY_DAYS",
    "smtp_host": "LINKDESK_SMTP_HOST",
    "smtp_port": "LINKDESK_SMTP_PORT",
    "smtp_tls": "LINKDESK_SMTP_TLS",
    "smtp_username": "LINKDESK_SMTP_USERNAME",
    "smtp_password": "LINKDESK_SMTP_PASSWORD",
    "smtp_sender": "LINKDESK_SMTP_SENDER",
    "smtp_timeout_seconds": "LINKDESK_SMTP_TIMEOUT_SECONDS",
    "outreach_emails_per_minute": "LINKDESK_OUTREACH_EMAILS_PER_MINUTE",
    "public_url": "LINKDESK_PUBLIC_URL",
    "alerts_enabled": "LINKDESK_ALERTS_ENABLED",
    "overview_refresh_seconds": "LINKDESK_OVERVIEW_REFRESH_SECONDS",
    "alerts_evaluate_seconds": "LINKDESK_ALERTS_EVALUATE_SECONDS",
    "alert_slack_webhook_url": "LINKDESK_ALERT_SLACK_WEBHOOK_URL",
    "alert_webhook_url": "LINKDESK_ALERT_WEBHOOK_URL",
    "alert_webhook_secret": "LINKDESK_ALERT_WEBHOOK_SECRET",
    "alert_smtp_host": "LINKDESK_ALERT_SMTP_HOST",
    "alert_smtp_port": "LINKDESK_ALERT_SMTP_PORT",
    "alert_smtp_starttls": "LINKDESK_ALERT_SMTP_STARTTLS",
    "alert_smtp_username": "LINKDESK_ALERT_SMTP_USERNAME",
    "alert_smtp_password": "LINKDESK_ALERT_SMTP_PASSWORD",
    "alert_email_from": "LINKDESK_ALERT_EMAIL_FROM",
    "alert_email_to": "LINKDESK_ALERT_EMAIL_TO",
    "alert_dashboard_url": "LINKDESK_ALERT_DASHBOARD_URL",
    "metrics_token": "LINKDESK_METRICS_TOKEN",
    "metrics_db_max_age_seconds": "LINKDESK_METRICS_DB_MAX_AGE_SECONDS",
    "worker_metrics_port": "LINKDESK_WORKER_METRICS_PORT",
    "worker_metrics_host": "LINKDESK_WORKER_METRICS_HOST",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)


def test_defaults_suit_a_local_sandbox():
    s = Settings()
    assert s.moneykit_base_url == "http://localhost:8611"
    assert s.moneykit_connect_host == "http://localhost:8611"
    assert s.moneykit_client_id == "linkdesk_sandbox_client"
    assert s.moneykit_client_secret.get_secret_value() == "linkdesk_sandbox_secret"
    assert s.database_url == "sqlite:///var/linkdesk.db"
    assert s.redirect_uri == "http://localhost:8501/oauth_return"
    assert s.webhook_url is None
    assert s.customer_tag_prefix == "customer:"
    assert s.staff_user == "operator"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("moneykit_base_url", "https://api.moneykit.com", "https://api.moneykit.com"),
        ("database_url", "postgresql://db/linkdesk", "postgresql://db/linkdesk"),
        ("redirect_uri", "https://desk.example/oauth_return", "https://desk.example/oauth_return"),
        (
            "webhook_url",
            "https://desk.example/webhooks/moneykit",
            "https://desk.example/webhooks/moneykit",
        ),
        ("customer_tag_prefix", "cust=", "cust="),
        ("staff_user", "night-shift", "night-shift"),
        ("moneykit_max_retries", "0", 0),
        ("sync_concurrency", "8", 8),
    ],
)
def test_environment_names(monkeypatch, field, value, expected):
    monkeypatch.setenv(ENV_NAMES[field], value)
    assert getattr(Settings(), field) == expected


def test_keyword_arguments_win_over_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")
    assert Settings(database_url="sqlite://").database_url == "sqlite://"


def test_every_field_is_documented_and_named():
    assert set(Settings.model_fields) == set(ENV_NAMES)
    documented = dict(Settings.fields_documentation())
    assert set(documented) == set(ENV_NAMES.values())
    assert all(len(text) > 10 for text in documented.values())


def test_secret_is_never_shown(monkeypatch):
    monkeypatch.setenv("MONEYKIT_CLIENT_SECRET", "top-secret-value")
    s = Settings()
    assert isinstance(s.moneykit_client_secret, SecretStr)
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert "top-secret-value" not in text
    assert s.moneykit_client_secret.get_secret_value() == "top-secret-value"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("moneykit_max_retries", -1),
        ("sync_concurrency", 0),
        ("moneykit_timeout_seconds", 0),
        ("customer_tag_prefix", ""),
    ],
)
def test_unsafe_values_are_refused(field, value):
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_settings_are_immutable_and_hashable():
    s = Settings()
    with pytest.raises(ValidationError):
        s.staff_user = "x"
    hash(s)


def test_alert_and_metrics_secrets_are_never_shown(monkeypatch):
    secrets = {
        "LINKDESK_ALERT_SLACK_WEBHOOK_URL": "https://hooks.example/very-secret-path",
        "LINKDESK_ALERT_WEBHOOK_SECRET": "hmac-secret-value",
        "LINKDESK_ALERT_SMTP_PASSWORD": "smtp-secret-value",
        "LINKDESK_METRICS_TOKEN": "metrics-secret-value",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert not any(value in text for value in secrets.values())
