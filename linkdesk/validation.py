"""Checks for values that come from outside (MoneyKit, banks) before they reach HTML or CSS.

Institution colours end up in CSS and logos in ``<img>`` tags. A colour such as
``red;background:url(x)`` would inject CSS, and a remote logo URL would make every staff
browser hot-link a third party (mixed content, tracking). So colours must be plain hex, and logos
are fetched once during sync and stored inline as ``data:`` URIs.
"""

from __future__ import annotations

import base64
import re
from urllib.parse import urlsplit

__all__ = [
    "ALLOWED_IMAGE_TYPES",
    "MAX_IMAGE_BYTES",
    "image_data_uri",
    "safe_hex_color",
    "safe_logo_url",
]

MAX_IMAGE_BYTES = 64 * 1024
ALLOWED_IMAGE_TYPES = frozenset(
    {"image/svg+xml", "image/png", "image/jpeg", "image/webp", "image/gif"}
)
_HEX_COLOR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# Base64 grows data by 4/3, plus the short prefix.
_MAX_DATA_URI_CHARS = (MAX_IMAGE_BYTES * 4) // 3 + 64


def safe_hex_color(value: object) -> str | None:
    """``#rgb`` or ``#rrggbb`` (lower-cased), or None for anything else."""
    if not isinstance(value, str):
        return None
    candidate = value.strip()
    if _HEX_COLOR.fullmatch(candidate) is None:
        return None
    return candidate.lower()


def _normalise_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type if media_type in ALLOWED_IMAGE_TYPES else None


def image_data_uri(
    content_type: str | None, data: bytes, *, max_bytes: int = MAX_IMAGE_BYTES
) -> str | None:
    """A base64 ``data:`` URI for an allowed image type no larger than ``max_bytes``, else None."""
    media_type = _normalise_type(content_type)
    if media_type is None or not isinstance(data, bytes | bytearray):
        return None
    if not data or len(data) > max_bytes:
        return None
    return f"data:{media_type};base64,{base64.b64encode(bytes(data)).decode('ascii')}"


def safe_logo_url(url: object) -> str | None:
    """The URL if it is ``https:`` or a base64 ``data:image/…`` of an allowed type, else None."""
    if not isinstance(url, str):
        return None
    candidate = url.strip()
    if not candidate or any(ord(ch) < 0x21 or ch in "\"'<>\\`" for ch in candidate):
        return None
    lowered = candidate.lower()
    if lowered.startswith("data:"):
        header, sep, payload = candidate[5:].partition(",")
        if not sep or len(candidate) > _MAX_DATA_URI_CHARS:
            return None
        media_type, _, encoding = header.partition(";")
        if media_type.lower() not in ALLOWED_IMAGE_TYPES or encoding.lower() != "base64":
            return None
        if not payload or _BASE64.fullmatch(payload) is None:
            return None
        return candidate
    parts = urlsplit(candidate)
    if parts.scheme.lower() != "https" or not parts.hostname:
        return None
    return candidate
