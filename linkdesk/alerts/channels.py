"""Where notifications go: a Slack-compatible incoming webhook, a generic JSON webhook signed with
HMAC-SHA256, and email over SMTP. Targets and secrets come from settings, never from the page.

The generic webhook's signature, for receivers to check::

    Linkdesk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

Recompute it over the raw body with the shared secret, compare in constant time, and refuse a
``t`` older than a few minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from linkdesk.mail import MailError, OutgoingMail, SmtpSettings, send_mail
from linkdesk.settings import Settings

__all__ = [
    "SIGNATURE_HEADER",
    "Channel",
    "DeliveryFailed",
    "Message",
    "build_channels",
    "sign_payload",
]

SIGNATURE_HEADER = "Linkdesk-Signature"
HTTP_TIMEOUT = 10.0


class DeliveryFailed(Exception):
    """A channel could not deliver; the message says why without any secret in it."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: str  # fired | reminder | resolved
    alert_id: int
    rule_id: str
    key: str
    title: str
    status: str
    value: float
    started_at: str
    resolved_at: str | None
    url: str | None

    @property
    def headline(self) -> str:
        prefix = {"fired": "FIRING", "reminder": "STILL FIRING", "resolved": "RESOLVED"}
        return f"[Linkdesk {prefix.get(self.kind, self.kind.upper())}] {self.title}"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "alert_id": self.alert_id,
            "rule": self.rule_id,
            "key": self.key,
            "title": self.title,
            "status": self.status,
            "value": self.value,
            "started_at": self.started_at,
            "resolved_at": self.resolved_at,
            "url": self.url,
        }

    def text(self) -> str:
        lines = [self.headline, f"Started: {self.started_at}"]
        if self.resolved_at:
            lines.append(f"Resolved: {self.resolved_at}")
        if self.url:
            lines.append(f"Links: {self.url}")
        return "\n".join(lines)


class Channel(Protocol):
    name: str

    def send(self, message: Message) -> None: ...


def sign_payload(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"t={timestamp},v1={digest}"


def _post(http: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        response = http.post(url, content=body, headers=headers, timeout=HTTP_TIMEOUT)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"network error ({type(exc).__name__})") from None
    if response.status_code >= 300:
        raise DeliveryFailed(f"HTTP {response.status_code}")


class SlackChannel:
    name = "slack"

    def __init__(self, url: str, http: httpx.Client) -> None:
        self._url, self._http = url, http

    def send(self, message: Message) -> None:
        # Slack's incoming webhooks (and Mattermost's, Rocket.Chat's) take {"text": ...}; outside
        # text is sent as plain text with Slack's control characters escaped.
        text = message.text().replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body = json.dumps({"text": text}).encode()
        _post(self._http, self._url, body, {"Content-Type": "application/json"})


class SignedWebhookChannel:
    name = "webhook"

    def __init__(self, url: str, secret: str, http: httpx.Client, now: Callable[[], float]) -> None:
        self._url, self._secret, self._http, self._now = url, secret, http, now

    def send(self, message: Message) -> None:
        body = json.dumps(message.as_json(), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_payload(self._secret, body, int(self._now())),
        }
        _post(self._http, self._url, body, headers)


class EmailChannel:
    """Alert email through the one SMTP sender (``linkdesk.mail``), one message to all."""

    name = "email"

    def __init__(self, settings: Settings) -> None:
        assert settings.alert_smtp_host is not None
        self._recipients = tuple(
            address.strip()
            for address in (settings.alert_email_to or "").split(",")
            if address.strip()
        )
        self._smtp = SmtpSettings(
            host=settings.alert_smtp_host,
            port=settings.alert_smtp_port,
            tls="starttls" if settings.alert_smtp_starttls else "none",
            sender=settings.alert_email_from,
            username=settings.alert_smtp_username or None,
            password=settings.alert_smtp_password,
            timeout=HTTP_TIMEOUT,
        )

    def send(self, message: Message) -> None:
        mail = OutgoingMail(to=self._recipients, subject=message.headline, text=message.text())
        try:
            send_mail(self._smtp, mail)
        except MailError as exc:
            raise DeliveryFailed(str(exc)) from None


def build_channels(
    settings: Settings, http: httpx.Client, now: Callable[[], float]
) -> dict[str, Channel]:
    """The channels whose settings are complete; a rule naming another one skips it."""
    channels: dict[str, Channel] = {}
    if settings.alert_slack_webhook_url is not None:
        channels["slack"] = SlackChannel(settings.alert_slack_webhook_url.get_secret_value(), http)
    if settings.alert_webhook_url and settings.alert_webhook_secret is not None:
        channels["webhook"] = SignedWebhookChannel(
            settings.alert_webhook_url,
            settings.alert_webhook_secret.get_secret_value(),
            http,
            now,
        )
    if settings.alert_smtp_host and settings.alert_email_to:
        channels["email"] = EmailChannel(settings)
    return channels
