"""The sandbox's state: one backend per MoneyKit area behind a small facade, owned by the app.

Route modules stay thin: they parse the request, call the backend of their area (``auth``,
``catalogue``, ``registry`` for links, ``imports``, ``connect``, ``events`` for webhooks) and
render the result. The facade owns what the areas share (the clock with its test offset, the
seeded random source, rate limits and faults), rebuilds everything on a reset, and offers the
public break/repair API scenarios and test controls use. All handlers are ``async`` and run on the
server's single event loop, so nothing here runs concurrently and nothing needs locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sandbox.backends.auth import AuthBackend
from sandbox.backends.base import Clock, Seeded, utcnow
from sandbox.backends.connect import ConnectBackend
from sandbox.backends.imports import ImportsBackend
from sandbox.backends.institutions import InstitutionsBackend
from sandbox.backends.links import LinksBackend
from sandbox.backends.webhooks import WebhooksBackend
from sandbox.demo import build_demo_links
from sandbox.institutions import Institution
from sandbox.keys import SigningKey
from sandbox.limits import Faults, RateLimiter
from sandbox.models import Link
from sandbox.redirects import RedirectUris
from sandbox.scenarios import ScenarioDirector
from sandbox.webhooks import WebhookConfig, WebhookDispatcher

__all__ = ["Clock", "SandboxState"]


class SandboxState:
    """Everything one sandbox app knows, split by MoneyKit area."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        seed: int = 42,
        demo_links: int = 300,
        clock: Clock | None = None,
        app_name: str = "Linkdesk Sandbox",
        webhook_config: WebhookConfig | None = None,
        refresh_delay_s: float = 0.5,
        demo_webhook_url: str | None = None,
        redirect_uris: Sequence[str] | None = None,
    ) -> None:
        self.client_id = client_id
        self.app_name = app_name
        # The webhook URL the company's customer app gave its links (None: no webhooks).
        self.demo_webhook_url = demo_webhook_url
        self.demo_link_count = demo_links
        # Seconds between POST /links/{id}/products (202) and the refresh landing.
        self.refresh_delay_s = refresh_delay_s
        self._base_clock: Clock = clock or utcnow
        # Moved by /_sandbox/time; every expiry, rate-limit window and timestamp uses it.
        self.clock_offset = timedelta(0)
        self.clock: Clock = self._now
        self.seeded = Seeded(seed)
        self.limiter = RateLimiter(self._now)
        self.faults = Faults()
        # Access tokens survive a reset: they are credentials, not demo data, and a running
        # client should not be logged out by a test resetting links.
        self.auth = AuthBackend(client_id, client_secret, self._now)
        self.catalogue = InstitutionsBackend()
        self.events = WebhooksBackend(self._now, webhook_config)
        self.registry = LinksBackend(
            clock=self._now,
            seeded=self.seeded,
            catalogue=self.catalogue,
            events=self.events,
            limiter=self.limiter,
        )
        self.imports = ImportsBackend(
            clock=self._now, seeded=self.seeded, catalogue=self.catalogue, links=self.registry
        )
        self.connect = ConnectBackend(
            clock=self._now,
            seeded=self.seeded,
            catalogue=self.catalogue,
            links=self.registry,
            events=self.events,
            redirect_uris=RedirectUris(redirect_uris),
        )
        self.scenarios = ScenarioDirector(self)
        self.reset()

    def _now(self) -> datetime:
        return self._base_clock() + self.clock_offset

    def reset(self, *, seed: int | None = None, demo_links: int | None = None) -> None:
        """Rebuild institutions, demo links and sessions exactly as a fresh start with this seed."""
        if demo_links is not None:
            self.demo_link_count = demo_links
        self.seeded.reseed(seed)
        self.catalogue.reset()
        self.connect.reset()
        self.limiter.reset()
        self.events.dispatcher.clear()
        self.scenarios.forget()
        demo = build_demo_links(
            self.seeded.rng,
            list(self.catalogue.institutions.values()),
            self.demo_link_count,
            self.clock(),
        )
        for link in demo:
            link.webhook = self.demo_webhook_url
        self.registry.reset(demo)

    # ------------------------------------------------------- what scenarios and tests read
    @property
    def seed(self) -> int:
        return self.seeded.seed

    @property
    def links(self) -> dict[str, Link]:
        return self.registry.links

    @property
    def institutions(self) -> dict[str, Institution]:
        return self.catalogue.institutions

    @property
    def down_institutions(self) -> frozenset[str]:
        return frozenset(self.catalogue.down)

    @property
    def signing_keys(self) -> list[SigningKey]:
        return self.events.signing_keys

    @property
    def webhooks(self) -> WebhookDispatcher:
        return self.events.dispatcher

    # ------------------------------------------------------------ public break/repair API
    def break_link(self, link: Link, error_code: str) -> None:
        """Put a link in ``error`` with ``error_code`` (sends ``link.state_changed``)."""
        self.registry.break_link(link, error_code)

    def repair_link(self, link: Link) -> None:
        """Back to ``connected``, products refreshed (sends ``link.state_changed``)."""
        self.registry.repair_link(link)

    def mark_institution_down(self, institution_id: str, down: bool) -> None:
        """Connect shows (or stops showing) an outage alert for the bank; links stay as they are."""
        if down:
            self.catalogue.down.add(institution_id)
        else:
            self.catalogue.down.discard(institution_id)

    def set_institution_down(self, institution_id: str, down: bool) -> list[Link]:
        """An outage: its connected links go to ``institution_error``; back up, they recover."""
        inst = self.catalogue.institution(institution_id)
        self.mark_institution_down(inst.institution_id, down)
        touched = []
        for link in self.registry.links.values():
            if link.institution_id != inst.institution_id:
                continue
            if down and link.state == "connected":
                self.registry.break_link(link, "institution_error")
                touched.append(link)
            elif not down and (link.state, link.error_code) == ("error", "institution_error"):
                self.registry.recover(link)
                touched.append(link)
        return touched
