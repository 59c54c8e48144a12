"""The Connect component's event log: its one parser, and "what is new" (pure, no I/O).

:func:`parse_entry` is the only place the log's shape is checked: the component's boundary
(``components.moneykit_connect.contract``) uses it on what the browser sends, and the Connect
service gets the typed :class:`LogEntry` objects it returned. The log is untrusted input:
whatever does not have the contract's shape is dropped, never raised, one entry at a time so that
a single bad payload cannot hide the success that follows it.

The component hands Python its *cumulative* log of a Connect session on every rerun, numbered
1, 2, 3… in callback order. A rerun, a double click or a duplicated browser message all hand over
entries that were applied already, so the log is applied by ``(session_id, seq)``: an entry whose
number has been applied is skipped, whatever it contains.

Entry shape: ``{"session_id": str, "seq": int >= 1, "type": "event" | "success" |
"relink_success" | "exit", "at": ISO-8601, "data": {...}}``.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

__all__ = [
    "ENTRY_TYPES",
    "TERMINAL_TYPES",
    "EntryType",
    "LogEntry",
    "NewEntries",
    "new_entries",
    "parse_entry",
    "terminal_entry",
]

EntryType = Literal["event", "success", "relink_success", "exit"]
ENTRY_TYPES: frozenset[str] = frozenset({"event", "success", "relink_success", "exit"})
TERMINAL_TYPES: frozenset[str] = frozenset({"success", "relink_success", "exit"})


@dataclass(frozen=True, slots=True)
class LogEntry:
    session_id: str
    seq: int
    type: EntryType
    at: datetime
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The entry in the component's JSON shape (a copy: callers cannot alter this one)."""
        at = self.at
        return {
            "session_id": self.session_id,
            "seq": self.seq,
            "type": self.type,
            "at": f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z",
            "data": copy.deepcopy(self.data),
        }

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @property
    def event_name(self) -> str | None:
        """For ``event`` entries, Connect's event name (``open``, ``change_screen``…)."""
        if self.type != "event":
            return None
        name = self.data.get("name")
        return name if isinstance(name, str) else None


class NewEntries(list[LogEntry]):
    """The entries still to apply, in ``seq`` order, plus what was noticed on the way.

    ``gaps``: numbers missing between 1 and the highest number seen (neither applied nor present),
    i.e. entries that were lost or have not arrived yet. ``malformed``: entries dropped because
    they did not have the documented shape. ``foreign``: entries of another session.
    """

    gaps: tuple[int, ...]
    malformed: int
    foreign: int

    def __init__(
        self,
        entries: Iterable[LogEntry] = (),
        *,
        gaps: Iterable[int] = (),
        malformed: int = 0,
        foreign: int = 0,
    ) -> None:
        super().__init__(entries)
        self.gaps = tuple(gaps)
        self.malformed = malformed
        self.foreign = foreign


# JavaScript's Date.prototype.toISOString() in UTC: what the component writes.
_AT_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def _parse_at(value: Any) -> datetime | None:
    if not isinstance(value, str) or _AT_RE.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _is_json_value(value: Any, depth: int = 0) -> bool:
    """Plain JSON (what the component's JSON state can hold), nested at most 32 deep."""
    if depth > 32:
        return False
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json_value(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v, depth + 1) for k, v in value.items())
    return False


def _is_exit_error(value: Any) -> bool:
    if value is None:
        return True
    return (
        isinstance(value, dict)
        and isinstance(value.get("error_id"), str)
        and isinstance(value.get("displayed_message"), str)
        and (value.get("request_id") is None or isinstance(value.get("request_id"), str))
    )


def _valid_data(kind: str, data: Any) -> bool:
    """The callback payload each entry type carries (Connect's onSuccess, onRelinkSuccess,
    onExit, onEvent, as the component records them)."""
    if not isinstance(data, dict):
        return False
    if kind == "event":
        return True
    if kind == "success":
        token = data.get("exchangeable_token")
        return (
            isinstance(token, str)
            and bool(token)
            and isinstance(data.get("institution"), dict)
            and isinstance(data.get("link_id"), str)
        )
    if kind == "relink_success":
        return isinstance(data.get("institution"), dict) and isinstance(data.get("link_id"), str)
    return "error" in data and _is_exit_error(data["error"])


def parse_entry(raw: object, *, session_id: str | None = None) -> LogEntry | None:
    """A :class:`LogEntry` if ``raw`` has the contract's shape (and belongs to ``session_id``,
    when given), else None; never raises.

    The shape: ``session_id`` a non-empty string; ``seq`` an int >= 1 (not a bool); ``type`` one
    of :data:`ENTRY_TYPES`; ``at`` as ``toISOString()`` writes it; ``data`` plain JSON with the
    fields its type's callback carries.
    """
    if not isinstance(raw, Mapping):
        return None
    entry_session = raw.get("session_id")
    seq = raw.get("seq")
    kind = raw.get("type")
    data = raw.get("data")
    at = _parse_at(raw.get("at"))
    if (
        not isinstance(entry_session, str)
        or not entry_session
        or (session_id is not None and entry_session != session_id)
        or type(seq) is not int
        or seq < 1
        or kind not in ENTRY_TYPES
        or at is None
        or not _valid_data(kind, data)
        or not _is_json_value(data)
    ):
        return None
    return LogEntry(
        session_id=entry_session,
        seq=seq,
        type=cast(EntryType, kind),
        at=at,
        # A copy, so that nobody can alter the component's stored state through it.
        data=copy.deepcopy(cast(dict[str, Any], data)),
    )


def new_entries(
    log: Iterable[object] | None,
    applied_seqs: Collection[int],
    *,
    session_id: str | None = None,
) -> NewEntries:
    """Entries of ``log`` whose ``seq`` is not in ``applied_seqs``, sorted by ``seq``.

    Malformed entries are dropped, and so are entries of other sessions: those of ``session_id``
    when given, otherwise those of the session of the first valid entry. When the same ``seq``
    appears twice only the first occurrence counts.
    """
    parsed: list[LogEntry] = []
    malformed = foreign = 0
    for raw in log or ():
        # Entries parsed at the component's boundary come in typed and are not parsed again.
        entry = raw if isinstance(raw, LogEntry) else parse_entry(raw)
        if entry is None:
            malformed += 1
            continue
        parsed.append(entry)

    target = session_id if session_id is not None else (parsed[0].session_id if parsed else None)
    applied = set(applied_seqs)
    chosen: dict[int, LogEntry] = {}
    for entry in parsed:
        if entry.session_id != target:
            foreign += 1
            continue
        if entry.seq in applied or entry.seq in chosen:
            continue
        chosen[entry.seq] = entry

    gaps = _gaps(applied | set(chosen))
    return NewEntries(
        (chosen[n] for n in sorted(chosen)), gaps=gaps, malformed=malformed, foreign=foreign
    )


_MAX_REPORTED_GAPS = 1000


def _gaps(known: set[int]) -> list[int]:
    # Walks the known numbers rather than range(1, max): a hostile seq of 10**12 must stay cheap.
    gaps: list[int] = []
    previous = 0
    for n in sorted(known):
        missing = range(previous + 1, n)
        gaps.extend(missing[: _MAX_REPORTED_GAPS - len(gaps)])
        if len(gaps) >= _MAX_REPORTED_GAPS:
            break
        previous = n
    return gaps


def terminal_entry(entries: Iterable[LogEntry]) -> LogEntry | None:
    """The first success / relink_success / exit entry by ``seq`` (a session ends once)."""
    terminals = [e for e in entries if e.is_terminal]
    return min(terminals, key=lambda e: e.seq) if terminals else None
