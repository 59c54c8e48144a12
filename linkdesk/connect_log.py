"""The Connect component's event log: parsing and "what is new" (pure functions, no I/O).

The component hands Python its *cumulative* log of a Connect session on every rerun, numbered
1, 2, 3… in callback order. A rerun, a double click or a duplicated browser message all hand over
entries that were applied already, so the log is applied by ``(session_id, seq)``: an entry whose
number has been applied is skipped, whatever it contains.

Entry shape: ``{"session_id": str, "seq": int >= 1, "type": "event" | "success" |
"relink_success" | "exit", "at": ISO-8601, "data": {...}}``.
"""

from __future__ import annotations

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
    at: datetime | None
    data: dict[str, Any]

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


def _parse_at(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_entry(raw: object) -> LogEntry | None:
    """A :class:`LogEntry` if ``raw`` has the documented shape, else None (never raises)."""
    if not isinstance(raw, Mapping):
        return None
    session_id = raw.get("session_id")
    seq = raw.get("seq")
    kind = raw.get("type")
    data = raw.get("data", {})
    if not isinstance(session_id, str) or not session_id:
        return None
    # bool is an int subclass; True must not pass for seq 1.
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None
    if kind not in ENTRY_TYPES:
        return None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        return None
    return LogEntry(
        session_id=session_id,
        seq=seq,
        type=cast(EntryType, kind),
        at=_parse_at(raw.get("at")),
        data=dict(data),
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
        entry = parse_entry(raw)
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
