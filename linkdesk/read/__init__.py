"""The read side of the dashboard, one module per screen: what a page shows, computed once for
every session that shows it, from rollups and indexed reads rather than scans of whole tables.
Built once in :mod:`linkdesk.bootstrap` and handed to the pages through the services."""

# No list the read side returns holds more rows than this, whatever a caller asks for.
MAX_PAGE_SIZE = 1000


def page_size(limit: int) -> int:
    """``limit`` brought within 1 … :data:`MAX_PAGE_SIZE`."""
    return max(1, min(int(limit), MAX_PAGE_SIZE))
