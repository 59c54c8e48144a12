"""MoneyKit's institutions area: the catalogue, lookup by id or alias, paged search, outages."""

from __future__ import annotations

from sandbox import errors
from sandbox.cursors import decode_cursor, encode_cursor
from sandbox.institutions import CATALOGUE, Institution

INSTITUTIONS_LIMIT_RANGE = (1, 1000)
INSTITUTIONS_DEFAULT_LIMIT = 50


class InstitutionsBackend:
    def __init__(self) -> None:
        self.institutions: dict[str, Institution] = {}
        # Institutions taken down (``/_sandbox/institutions/{id}/status`` or a scenario): Connect
        # shows an outage alert and refuses logins, refreshes fail.
        self.down: set[str] = set()
        self.reset()

    def reset(self) -> None:
        self.institutions = {inst.institution_id: inst for inst in CATALOGUE}
        self.down = set()

    def is_down(self, institution_id: str) -> bool:
        return institution_id in self.down

    def institution(self, institution_id: str) -> Institution:
        inst = self.institutions.get(institution_id)
        if inst is not None:
            return inst
        for candidate in self.institutions.values():
            if institution_id in candidate.aliases:
                return candidate
        raise errors.institution_not_found()

    def list_institutions(
        self, *, name: str | None, featured: bool | None, cursor: str | None, limit: int | None
    ) -> tuple[list[Institution], str | None]:
        size = INSTITUTIONS_DEFAULT_LIMIT if limit is None else limit
        low, high = INSTITUTIONS_LIMIT_RANGE
        if not low <= size <= high:
            raise errors.validation_error(
                ["query", "limit"], f"Input should be between {low} and {high}", "value_error"
            )
        matches = list(self.institutions.values())
        if name:
            needle = name.casefold()
            matches = [i for i in matches if i.name.casefold().startswith(needle)]
        if featured:
            matches = [i for i in matches if i.is_featured]
        start = decode_cursor(cursor, "o") if cursor else 0
        page = matches[start : start + size]
        end = start + len(page)
        next_cursor = encode_cursor({"o": end}) if end < len(matches) else None
        return page, next_cursor
