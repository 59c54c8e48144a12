"""The one codec of the pages' keyset cursors: a JSON value in unpadded URL-safe base64, so a
cursor travels in a URL as it is. Both lists that page by keys (links, a customer's timeline)
check what they decode against the shape they expect."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = ["InvalidCursor", "decode_cursor", "encode_cursor"]


class InvalidCursor(ValueError):
    """A cursor this module did not produce (edited, truncated, or for another list or order)."""


def encode_cursor(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("cursor is not readable") from exc
