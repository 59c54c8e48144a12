"""The Links view as CSV: every matching link, read page by page with the keyset cursor, with
cells a spreadsheet cannot run as formulas."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from linkdesk.read.link_order import LinkSort
from linkdesk.read.links import LinkFilters, LinkQueries

# The most rows one download holds; the page says so when a view has more.
EXPORT_CAP = 50_000


@dataclass(frozen=True, slots=True)
class LinksExport:
    text: str
    rows: int
    capped: bool


_CSV_COLUMNS = (
    "link_id",
    "customer_id",
    "institution_id",
    "institution_name",
    "state",
    "error_code",
    "health",
    "health_reason",
    "created_at",
    "last_synced_at",
    "updated_at",
)


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    # A bank name starting with = or + would run as a formula in a spreadsheet.
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def links_csv(
    queries: LinkQueries,
    filters: LinkFilters | None = None,
    *,
    sort: LinkSort | str = LinkSort.UPDATED_DESC,
    cap: int = EXPORT_CAP,
    page_size: int = 1000,
) -> LinksExport:
    """The links matching ``filters`` as CSV, read page by page with the keyset cursor."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_COLUMNS)
    written = 0
    after: str | None = None
    capped = False
    cap = max(1, int(cap))
    while True:
        page = queries.list_links(
            filters, limit=min(page_size, cap - written), after=after, sort=sort
        )
        for row in page.rows:
            writer.writerow([_cell(getattr(row, column)) for column in _CSV_COLUMNS])
        written += len(page.rows)
        if page.next_cursor is None:
            break
        if written >= cap:
            capped = True
            break
        after = page.next_cursor
    return LinksExport(text=buffer.getvalue(), rows=written, capped=capped)
