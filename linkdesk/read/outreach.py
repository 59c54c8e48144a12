"""The Outreach screen's reads: who a filtered Links view would email a relink link, and who not.

One read of at most a campaign's links (the view's first ``MAX_CAMPAIGN_LINKS`` in the Links
page's order, most recently changed first), each with its verdict, its customer's address and
whether a relink link for it is live, worked out by the database; Python only sorts them into the
four groups. The screen gets every group's count and its first rows, shared for a few seconds by
every session that shows the same view (an agent's clicks on the page rerun it); a campaign reads
every row afresh, so the count an agent confirmed is checked against the view as it is then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from linkdesk.health import Health, health_case
from linkdesk.read.link_order import DESC, LinkSort, sort_keys
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store.aggregates import as_aware
from linkdesk.store.engine import Store
from linkdesk.store.models import CustomerEmail, CustomerLinkToken, Institution, Link
from linkdesk.store.shared import SharedResults

__all__ = [
    "MAX_CAMPAIGN_LINKS",
    "OutreachGroup",
    "OutreachReads",
    "OutreachView",
    "PlannedEmail",
]

# One campaign covers at most this many links; narrow the filters for more.
MAX_CAMPAIGN_LINKS = 5000
# Views (choices of filters) whose counts are kept at once.
_VIEWS_KEPT = 16


@dataclass(frozen=True, slots=True)
class PlannedEmail:
    """One link of the filtered view and what outreach will do with it."""

    link_id: str
    customer_id: str | None
    institution_id: str
    institution_name: str
    email: str | None
    email_source: str | None
    # None: it will be emailed; else why not (no customer, no email, live link, not needed).
    reason: str | None = None


@dataclass(slots=True)
class OutreachGroup:
    """How many links of the view fall in a group, and the first of them (in the list's order)."""

    count: int = 0
    shown: list[PlannedEmail] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether ``shown`` holds every link of the group."""
        return len(self.shown) == self.count


@dataclass(slots=True)
class OutreachView:
    """A view's links sorted into what outreach would do with each."""

    to_send: OutreachGroup = field(default_factory=OutreachGroup)
    without_email: OutreachGroup = field(default_factory=OutreachGroup)
    live_link: OutreachGroup = field(default_factory=OutreachGroup)
    not_needed: OutreachGroup = field(default_factory=OutreachGroup)
    truncated: bool = False  # more links match than one campaign covers


class OutreachReads:
    def __init__(
        self,
        store: Store,
        links: LinkQueries,
        *,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._links = links
        self._clock = clock
        self._shared = SharedResults(kept=_VIEWS_KEPT, monotonic=monotonic)

    def shared_view(self, filters: LinkFilters, *, shown: int, max_age: float) -> OutreachView:
        """:meth:`view` for every session that asks for the same view within ``max_age``
        seconds; an older one is read again before it is shown (an agent confirms a count)."""
        return self._shared.get(
            (filters, shown),
            lambda: self.view(filters, self._clock(), shown=shown),
            max_age,
            serve_stale=False,
        )

    def forget_views(self) -> None:
        """After a change outreach made itself (a campaign, imported addresses): the next view
        is read afresh."""
        self._shared.forget()

    def view(self, filters: LinkFilters, now: datetime, *, shown: int | None) -> OutreachView:
        """The view's links in their groups; ``shown`` rows of each (``None``: every one)."""
        view = OutreachView()
        with self._store.read() as session:
            rows = session.execute(self._campaign(filters, now)).all()
        view.truncated = len(rows) > MAX_CAMPAIGN_LINKS
        for row in rows[:MAX_CAMPAIGN_LINKS]:
            group, reason = self._group_of(view, row)
            group.count += 1
            if shown is not None and len(group.shown) >= shown:
                continue
            planned = PlannedEmail(
                link_id=row.link_id,
                customer_id=row.customer_id,
                institution_id=row.institution_id,
                institution_name=row.institution_name,
                email=row.email,
                email_source=row.email_source,
                reason=reason,
            )
            group.shown.append(planned)
        return view

    @staticmethod
    def _group_of(view: OutreachView, row: sa.Row[Any]) -> tuple[OutreachGroup, str | None]:
        if row.health != Health.NEEDS_RELINK.value:
            return view.not_needed, f"does not need a relink ({row.health})"
        if row.customer_id is None:
            return view.without_email, "no customer id on the link"
        if row.email is None:
            return view.without_email, "no email address for this customer"
        if row.live_by is not None:
            until = as_aware(row.live_until)
            return view.live_link, (
                f"a relink link sent by {row.live_by} is live until {until:%Y-%m-%d %H:%M} UTC"
            )
        return view.to_send, None

    def _campaign(self, filters: LinkFilters, now: datetime) -> sa.Select[*tuple[Any, ...]]:
        def live_token(column: Any) -> Any:
            # The link's live relink link, if any (at most one: services/customer_links.py).
            return (
                sa.select(column)
                .where(CustomerLinkToken.link_id == Link.link_id, CustomerLinkToken.live_at(now))
                .correlate(Link)
                .limit(1)
                .scalar_subquery()
            )

        # The view's first links alone first, in the Links page's order (which its indexes
        # hold, so this reads a campaign's length of index at most), then only those joined:
        # the joins and the live-link test never see the rest.
        order = [
            key.desc() if direction == DESC else key.asc()
            for key, direction, _ in sort_keys(LinkSort.UPDATED_DESC)
        ]
        first = (
            sa.select(Link.link_id, Link.updated_at)
            .where(*self._links.conditions(filters, now))
            .order_by(*order)
            .limit(MAX_CAMPAIGN_LINKS + 1)
            .subquery("first")
        )
        return (
            sa.select(
                Link.link_id,
                Link.customer_id,
                Link.institution_id,
                sa.func.coalesce(Institution.name, Link.institution_id).label("institution_name"),
                health_case(now, self._links.thresholds).label("health"),
                CustomerEmail.email,
                CustomerEmail.source.label("email_source"),
                live_token(CustomerLinkToken.created_by).label("live_by"),
                live_token(CustomerLinkToken.expires_at).label("live_until"),
            )
            .select_from(first)
            .join(Link, Link.link_id == first.c.link_id)
            .outerjoin(Institution, Institution.institution_id == Link.institution_id)
            .outerjoin(CustomerEmail, CustomerEmail.customer_id == Link.customer_id)
            .order_by(first.c.updated_at.desc(), first.c.link_id.desc())
        )
