"""The Links screen's totals: how many links a filtered view holds, and whether that is exact."""

from __future__ import annotations

from dataclasses import dataclass

from linkdesk.store.queries import HealthSummary, LinkFilters, LinkQueries


@dataclass(frozen=True, slots=True)
class Matching:
    """How many links match a view; not ``exact`` when counting stopped at the cap."""

    count: int
    exact: bool


def matching_links(
    queries: LinkQueries, summary: HealthSummary | None, filters: LinkFilters, *, cap: int
) -> Matching:
    """No filter, or a health or an error filter alone, is answered by the shared summary
    (exact, and moved at once by every write that changes a link's group); any other
    combination is counted now, stopping after ``cap``, so a broad view stays cheap at any size."""
    if summary is not None:
        if filters == LinkFilters():
            return Matching(summary.total, exact=True)
        if filters.health is not None and filters == LinkFilters(health=filters.health):
            return Matching(summary.counts[filters.health], exact=True)
        if filters.error_code and filters == LinkFilters(error_code=filters.error_code):
            return Matching(summary.errors.get(filters.error_code, 0), exact=True)
    counted = queries.count_links(filters, cap=cap)
    return Matching(counted, exact=counted <= cap)
