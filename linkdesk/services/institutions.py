"""Fetching an institution and its images once, turning them into storable, validated data."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from linkdesk.moneykit.client import MoneyKitClient
from linkdesk.moneykit.errors import MoneyKitError
from linkdesk.moneykit.models import Institution
from linkdesk.store.repository import IMAGE_SLOTS, InstitutionData
from linkdesk.validation import MAX_IMAGE_BYTES, image_data_uri, safe_logo_url

__all__ = ["InstitutionFetcher"]

logger = logging.getLogger("linkdesk.services.institutions")


class InstitutionFetcher:
    """Reads institutions from MoneyKit, each at most once per fetcher, and inlines their images.

    A fetcher is meant to live for one sync run (or one Connect completion). ``known_sources``
    lets it skip images the store already holds from the same URL.
    """

    def __init__(self, client: MoneyKitClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._institutions: dict[str, Institution | None] = {}
        self._images: dict[str, str | None] = {}
        self._stored: set[str] = set()
        self.fetched = 0

    def first_store(self, institution_id: str) -> bool:
        """True the first time it is asked for ``institution_id``: store the record then only."""
        with self._lock:
            if institution_id in self._stored:
                return False
            self._stored.add(institution_id)
            return True

    def institution(self, institution_id: str) -> Institution | None:
        """The institution, or None when MoneyKit would not give it (remembered for the run)."""
        with self._lock:
            if institution_id in self._institutions:
                return self._institutions[institution_id]
        try:
            found: Institution | None = self._client.get_institution(institution_id)
        except MoneyKitError as exc:
            logger.warning("institution %s not fetched: %s", institution_id, exc)
            found = None
        with self._lock:
            if institution_id not in self._institutions:
                self._institutions[institution_id] = found
                if found is not None:
                    self.fetched += 1
            return self._institutions[institution_id]

    def image(self, url: str) -> str | None:
        """A validated ``data:`` URI for the image at ``url`` (fetched once per URL), or None."""
        if url.startswith("data:"):
            return safe_logo_url(url)
        with self._lock:
            if url in self._images:
                return self._images[url]
        value: str | None = None
        try:
            content_type, body = self._client.fetch_image(url, max_bytes=MAX_IMAGE_BYTES)
            value = image_data_uri(content_type, body)
        except (MoneyKitError, ValueError) as exc:
            logger.info("institution image not fetched: %s", exc)
        with self._lock:
            self._images.setdefault(url, value)
            return self._images[url]

    def data(
        self,
        institution_id: str,
        *,
        fallback_name: str | None = None,
        fallback_avatar: str | None = None,
        known_sources: Mapping[str, str] | None = None,
    ) -> InstitutionData | None:
        """What to store for the institution, or None when it could not be read at all."""
        institution = self.institution(institution_id)
        if institution is None:
            return None
        known = dict(known_sources or {})
        images: dict[str, tuple[str, str | None]] = {}
        for slot in IMAGE_SLOTS:
            url = getattr(institution, slot)
            if slot == "avatar" and not url:
                url = fallback_avatar
            if not isinstance(url, str) or not url:
                continue
            if known.get(slot) == url:
                continue  # stored already from this very URL
            images[slot] = (url, self.image(url))
        return InstitutionData(
            institution_id=institution.institution_id,
            name=institution.name or fallback_name or institution_id,
            domain=institution.domain,
            country=institution.country,
            color=institution.color,
            color_dark=institution.color_dark,
            images=images,
        )
