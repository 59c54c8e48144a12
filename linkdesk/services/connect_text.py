"""What staff read of a Connect session, and what of it may be stored.

Connect's exit error becomes one sentence for the agent; an event's payload is stored only with
anything that looks like a credential removed and its size bounded. Text only: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from linkdesk.connect_log import LogEntry

__all__ = ["MAX_TEXT", "clean_text", "exit_fields", "exit_message", "stored_payload"]

MAX_TEXT = 500
_REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"token|secret|password|passcode|otp", re.IGNORECASE)
_MAX_PAYLOAD_CHARS = 32_000

_EXIT_HINTS = {
    "invalid_credentials": "The bank did not accept the username or password.",
    "user_input_incorrect": "An answer or code entered in Connect was not accepted.",
    "user_oauth_denied": "Access was refused on the bank's page.",
    "user_setup_required": "The customer must fix something with their bank first.",
    "institution_error": "The bank is not available right now; try again later.",
    "provider_error": "The data provider failed; try again later.",
    "system_error": "MoneyKit had an internal error; try again later.",
}


def clean_text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A string from Connect on one line, bounded; anything else is None."""
    if not isinstance(value, str):
        return None
    cleaned = " ".join(value.split())
    return cleaned[:limit] if cleaned else None


def exit_message(error: Mapping[str, Any] | None) -> str:
    """What to tell staff when Connect ended without linking, from Connect's exit error."""
    if not error:
        return "You closed Connect before finishing."
    error_id = clean_text(error.get("error_id"), 100)
    shown = clean_text(error.get("displayed_message"))
    request_id = clean_text(error.get("request_id"), 200)
    sentence = shown or _EXIT_HINTS.get(error_id or "", "Connect ended with an error.")
    if not sentence.endswith((".", "!", "?")):
        sentence += "."
    details = [
        part for part in (error_id, f"request id {request_id}" if request_id else None) if part
    ]
    return f"{sentence} ({', '.join(details)})" if details else sentence


def exit_fields(error: Mapping[str, Any] | None) -> tuple[str | None, str, str | None]:
    """``(error_id, message for staff, request_id)`` of an exit, as the session row keeps them."""
    message = exit_message(error)
    if not error:
        return None, message, None
    return clean_text(error.get("error_id"), 100), message, clean_text(error.get("request_id"), 200)


def _redact(value: Any, depth: int = 0) -> Any:
    """Copy of an event payload with anything that looks like a credential removed."""
    if depth > 8:
        return None
    if isinstance(value, Mapping):
        return {
            str(k): (_REDACTED if _SECRET_KEY.search(str(k)) else _redact(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value[:200]]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def stored_payload(entry: LogEntry) -> dict[str, Any]:
    """The entry's data as stored: credentials redacted, a marker instead when too large."""
    cleaned = _redact(entry.data)
    encoded = json.dumps(cleaned, default=str)
    if len(encoded) > _MAX_PAYLOAD_CHARS:
        return {"truncated": True, "size": len(encoded)}
    return cleaned if isinstance(cleaned, dict) else {}
