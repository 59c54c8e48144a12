"""Opaque paging cursors: URL-safe base64 of a small JSON object."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sandbox import errors


def encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, key: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))[key]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError) as exc:
        raise errors.validation_error(["query", "cursor"], "Invalid cursor", "value_error") from exc
    if not isinstance(value, int) or value < 0:
        raise errors.validation_error(["query", "cursor"], "Invalid cursor", "value_error")
    return value
