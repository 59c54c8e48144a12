"""MoneyKit's webhooks area: the events a link sends, their signing keys, and the test event.

Delivery itself (queue, retries, faults, the attempt log) is :mod:`sandbox.webhooks`; this backend
builds the payloads MoneyKit documents and hands them to it.
"""

from __future__ import annotations

import secrets
from typing import Any

from sandbox.backends.base import Clock, iso
from sandbox.errors import MoneyKitError
from sandbox.keys import SigningKey, new_signing_key
from sandbox.models import Link
from sandbox.webhooks import WebhookConfig, WebhookDispatcher

# Signing keys stay on the JWKS this long after a rotation, so in-flight signatures verify.
RETIRED_KEYS_KEPT = 3


class WebhooksBackend:
    def __init__(self, clock: Clock, config: WebhookConfig | None = None) -> None:
        self._clock = clock
        self.signing_keys: list[SigningKey] = [new_signing_key()]
        # The `iss` of signatures: the sandbox's public URL once the app knows it.
        self.issuer = "http://localhost"
        self.dispatcher = WebhookDispatcher(
            signing_key=lambda: self.signing_keys[-1],
            clock=clock,
            issuer=lambda: self.issuer,
            config=config,
        )

    def emit(self, link: Link, event: str, extra: dict[str, Any]) -> str | None:
        """Queue a webhook for ``link`` if it has a URL; returns the delivery token."""
        if not link.webhook:
            return None
        return self.send(link, event, extra)

    def send(
        self, link: Link, event: str, extra: dict[str, Any], *, idempotency_key: str | None = None
    ) -> str:
        assert link.webhook is not None
        payload: dict[str, Any] = {
            "webhook_event": event,
            "webhook_major_version": 1,
            "webhook_minor_version": 0,
            "webhook_idempotency_key": idempotency_key or f"whk_{secrets.token_hex(12)}",
            "webhook_timestamp": iso(self._clock()),
            "link_id": link.link_id,
            "link_tags": list(link.link_tags or []),
            **extra,
        }
        return self.dispatcher.enqueue(
            url=link.webhook, event=event, link_id=link.link_id, payload=payload
        )

    def state_changed(self, link: Link) -> str | None:
        extra: dict[str, Any] = {"state": link.state}
        if link.error_code is not None:
            extra["error"] = link.error_code
            extra["error_message"] = f"The link is in error: {link.error_code}."
        return self.emit(link, "link.state_changed", extra)

    def product_refresh(
        self, link: Link, product: str, state: str, *, error_message: str | None = None
    ) -> str | None:
        extra: dict[str, Any] = {
            "product": product,
            "state": state,
            "state_changed_at": iso(self._clock()),
        }
        if error_message:
            extra["error_message"] = error_message
        return self.emit(link, "link.product_refresh", extra)

    def updates_available(self, link: Link) -> str | None:
        return self.emit(link, "transactions.updates_available", {"has_history": True})

    def test_event(self, link: Link, event: str, idempotency_key: str) -> str:
        """``POST /webhooks/test/link/{id}``: the event as the link stands now."""
        if not link.webhook:
            raise MoneyKitError(
                400, "link_error.bad_config", "This link has no webhook URL to deliver to."
            )
        if event == "link.state_changed":
            extra: dict[str, Any] = {"state": link.state}
            if link.error_code:
                extra["error"] = link.error_code
        elif event == "transactions.updates_available":
            extra = {"has_history": True}
        else:
            # The SDK's product model only accepts `link.product_refresh` as the event name,
            # so the test event `product.state_changed` is delivered under that name too.
            event = "link.product_refresh"
            product = next(iter(link.products), "accounts")
            extra = {
                "product": product,
                "state": "completed",
                "state_changed_at": iso(self._clock()),
            }
        return self.send(link, event, extra, idempotency_key=idempotency_key)

    def rotate_signing_key(self) -> SigningKey:
        self.signing_keys.append(new_signing_key())
        del self.signing_keys[: -(RETIRED_KEYS_KEPT + 1)]
        return self.signing_keys[-1]
