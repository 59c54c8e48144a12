"""Institutions and their images."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from linkdesk.moneykit.errors import (
    APIResponseValidationError,
)
from linkdesk.moneykit.images import fetch_image
from linkdesk.moneykit.models import (
    Institution,
    InstitutionPage,
)
from linkdesk.moneykit.transport import (
    Transport,
    _quote,
)
from linkdesk.validation import MAX_IMAGE_BYTES

__all__ = ["InstitutionsAPI"]


class InstitutionsAPI(Transport):
    # -- institutions ------------------------------------------------------------------------

    def get_institution(self, institution_id: str) -> Institution:
        return self._parse(
            self._send("GET", f"/institutions/{_quote(institution_id)}"), Institution
        )

    def list_institutions(
        self,
        *,
        name: str | None = None,
        featured: bool | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> InstitutionPage:
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000.")
        params: dict[str, Any] = {"name": name, "cursor": cursor or None, "limit": limit}
        if featured is not None:
            params["featured"] = "true" if featured else "false"
        response = self._send("GET", "/institutions", params=params)

        def flatten(payload: Any) -> Any:
            # The list response calls its cursor object ``cursors`` (plural).
            if isinstance(payload, dict):
                cursors = payload.get("cursors")
                next_cursor = cursors.get("next") if isinstance(cursors, dict) else None
                return {**payload, "next_cursor": next_cursor}
            return payload

        return self._parse(response, InstitutionPage, transform=flatten)

    def iter_institutions(
        self, *, name: str | None = None, featured: bool | None = None, limit: int = 100
    ) -> Iterator[Institution]:
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = self.list_institutions(name=name, featured=featured, cursor=cursor, limit=limit)
            yield from page.institutions
            if not page.next_cursor or not page.institutions:
                return
            if page.next_cursor in seen:
                raise APIResponseValidationError("MoneyKit repeated an institutions cursor.")
            seen.add(page.next_cursor)
            cursor = page.next_cursor

    # -- images ------------------------------------------------------------------------------

    def fetch_image(self, url: str, *, max_bytes: int = MAX_IMAGE_BYTES) -> tuple[str, bytes]:
        """Download an institution image; returns ``(content_type, body)``.

        Only from the hosts :attr:`image_policy` allows, never to an internal address, redirects
        checked hop by hop, at most ``max_bytes``, without credentials. Raises
        :class:`~linkdesk.moneykit.images.ImageRefused` (a ``ValueError``) otherwise.
        """
        timeout = self._timeout if isinstance(self._timeout, float | httpx.Timeout) else 10.0
        # An injected HTTP client (its transport) is the caller's choice and is used for images
        # too; the policy's checks apply either way.
        injected = None if self._owns_http else self._http
        return fetch_image(
            url, self.image_policy, max_bytes=max_bytes, timeout=timeout, http=injected
        )
