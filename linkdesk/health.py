"""What staff should do about a link: a verdict, the reason for it, and a playbook.

The verdict depends on time (a link is only *stuck* after sitting in ``connecting`` for a while, and
only *stale* after days without fresh data), so everything here takes ``now`` and the thresholds
explicitly. :func:`health_condition_at` and :func:`health_case` are the SQL twins of
:func:`assess`, so the Links page can filter and count by verdict inside the database; a unit test
keeps the two in step.

A product refresh that failed or is still in progress (``links.refresh_issue``, stored by the
ingestor from MoneyKit's product fields) does not get a verdict of its own: the verdict of a
connected link stays *healthy* or *stale*, so every SQL twin and the Links page's plans (which read
from the verdict groups) are unchanged, and the refresh shows as the verdict's *reason*
(``product_refresh_failed`` / ``product_refresh_pending``) with its playbook. A stale link stays
``stale``: no fresh data is the bigger news. :func:`refresh_issue_condition` counts them in SQL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from linkdesk.moneykit.models import REFRESH_FAILED, REFRESH_ISSUES, REFRESH_PENDING
from linkdesk.store.models import Link, LinkProduct

__all__ = [
    "PLAYBOOKS",
    "REFRESH_REASONS",
    "RELINK_ERRORS",
    "STUCK_STATES",
    "WAIT_ERRORS",
    "Health",
    "HealthThresholds",
    "Playbook",
    "ProductRefresh",
    "Verdict",
    "assess",
    "assess_link",
    "health_case",
    "health_condition",
    "health_condition_at",
    "link_health",
    "playbook_for",
    "product_refreshes",
    "refresh_issue_condition",
    "refresh_issue_counts",
]

# Errors the customer has to fix by going through Connect again (protocol doc §4.2). MoneyKit's
# error enum has no separate "account locked" code: a bank-side lock surfaces as
# user_setup_required (the customer must sort it out with the bank, then relink).
RELINK_ERRORS = frozenset(
    {
        "auth_expired",
        "invalid_credentials",
        "user_input_incorrect",
        "user_oauth_denied",
        "user_setup_required",
        "incomplete",
    }
)
# Errors on MoneyKit's, the provider's or the bank's side: waiting is the fix.
WAIT_ERRORS = frozenset({"institution_error", "provider_error", "system_error"})
# A link should not stay here: the user is gone or our exchange was lost.
STUCK_STATES = frozenset({"connecting", "awaiting_token_exchange"})
# The reason a connected link's verdict gives for a product refresh issue.
REFRESH_REASONS = {
    REFRESH_FAILED: "product_refresh_failed",
    REFRESH_PENDING: "product_refresh_pending",
}


class Health(enum.StrEnum):
    HEALTHY = "healthy"
    NEEDS_RELINK = "needs_relink"
    WAIT = "wait"
    STUCK = "stuck"
    DELETED = "deleted"
    # Errors that neither a relink nor waiting repairs (user_error, no_accounts, unknown codes).
    ATTENTION = "attention"
    # Connected, but no fresh data for longer than the stale threshold.
    STALE = "stale"
    # Still inside Connect or waiting for the exchange, for less than the stuck threshold.
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    stuck_after: timedelta = timedelta(minutes=30)
    stale_after: timedelta = timedelta(hours=48)

    @classmethod
    def from_settings(cls, settings: Any) -> HealthThresholds:
        return cls(
            stuck_after=timedelta(minutes=settings.health_stuck_after_minutes),
            stale_after=timedelta(hours=settings.health_stale_after_hours),
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    health: Health
    reason: str  # a key of PLAYBOOKS where one exists (error code, stuck_…, stale), else a code
    since: datetime | None = None  # the time the verdict is measured from, when it has one


def link_health(state: str, error_code: str | None) -> Health:
    """The verdict from state and error code alone (no thresholds: any connecting link is stuck).

    Kept for callers that have no clock (the relink guard only needs NEEDS_RELINK).
    """
    if state == "deleted":
        return Health.DELETED
    if state in STUCK_STATES:
        return Health.STUCK
    if state == "connected":
        return Health.HEALTHY
    if state == "error" and error_code in RELINK_ERRORS:
        return Health.NEEDS_RELINK
    if state == "error" and error_code in WAIT_ERRORS:
        return Health.WAIT
    return Health.ATTENTION


def health_condition(health: Health) -> ColumnElement[bool]:
    """SQL twin of :func:`link_health` (no thresholds)."""
    state, error = Link.state, Link.error_code
    if health is Health.DELETED:
        return state == "deleted"
    if health is Health.STUCK:
        return state.in_(sorted(STUCK_STATES))
    if health is Health.HEALTHY:
        return state == "connected"
    if health is Health.NEEDS_RELINK:
        return sa.and_(state == "error", error.in_(sorted(RELINK_ERRORS)))
    if health is Health.WAIT:
        return sa.and_(state == "error", error.in_(sorted(WAIT_ERRORS)))
    if health in (Health.STALE, Health.PENDING):
        return sa.false()
    return _attention()


def _attention() -> ColumnElement[bool]:
    state, error = Link.state, Link.error_code
    known = sorted(RELINK_ERRORS | WAIT_ERRORS)
    return sa.and_(
        state.notin_(["deleted", "connected", *sorted(STUCK_STATES)]),
        sa.or_(state != "error", error.is_(None), error.notin_(known)),
    )


def assess(
    state: str,
    error_code: str | None,
    *,
    now: datetime,
    created_at: datetime | None = None,
    discovered_at: datetime | None = None,
    products_refreshed_at: datetime | None = None,
    thresholds: HealthThresholds | None = None,
    refresh_issue: str | None = None,
) -> Verdict:
    """The verdict for one link at ``now``.

    *Stuck* is measured from the link's creation (else from when Linkdesk first saw it); *stale*
    from MoneyKit's last successful product refresh (else creation, else first seen). A healthy
    link with a failed or pending product refresh (``refresh_issue``) says so in its reason.
    """
    limits = thresholds or HealthThresholds()
    if state == "deleted":
        return Verdict(Health.DELETED, "deleted")
    if state in STUCK_STATES:
        since = created_at or discovered_at
        if since is None or now - since > limits.stuck_after:
            return Verdict(Health.STUCK, f"stuck_{state}", since)
        return Verdict(Health.PENDING, state, since)
    if state == "error":
        if error_code in RELINK_ERRORS:
            return Verdict(Health.NEEDS_RELINK, error_code)
        if error_code in WAIT_ERRORS:
            return Verdict(Health.WAIT, error_code)
        return Verdict(Health.ATTENTION, error_code or "error_without_code")
    if state == "connected":
        since = products_refreshed_at or created_at or discovered_at
        if since is not None and now - since > limits.stale_after:
            return Verdict(Health.STALE, "stale", since)
        return Verdict(Health.HEALTHY, REFRESH_REASONS.get(refresh_issue or "", "connected"), since)
    return Verdict(Health.ATTENTION, "unknown_state")


def assess_link(link: Any, *, now: datetime, thresholds: HealthThresholds | None = None) -> Verdict:
    """:func:`assess` for a stored link: an ORM ``Link`` or a row with the same attribute names."""
    return assess(
        link.state,
        link.error_code,
        now=now,
        created_at=link.created_at,
        discovered_at=link.discovered_at,
        products_refreshed_at=link.products_refreshed_at,
        thresholds=thresholds,
        refresh_issue=link.refresh_issue,
    )


def _stuck_since() -> ColumnElement[Any]:
    return sa.func.coalesce(Link.created_at, Link.discovered_at)


def _fresh_since() -> ColumnElement[Any]:
    return sa.func.coalesce(Link.products_refreshed_at, Link.created_at, Link.discovered_at)


def health_condition_at(
    health: Health, now: datetime, thresholds: HealthThresholds | None = None
) -> ColumnElement[bool]:
    """SQL twin of :func:`assess`: links whose verdict at ``now`` is ``health``."""
    limits = thresholds or HealthThresholds()
    state = Link.state
    stuck_cutoff = now - limits.stuck_after
    stale_cutoff = now - limits.stale_after
    if health is Health.STUCK:
        return sa.and_(state.in_(sorted(STUCK_STATES)), _stuck_since() < stuck_cutoff)
    if health is Health.PENDING:
        return sa.and_(state.in_(sorted(STUCK_STATES)), _stuck_since() >= stuck_cutoff)
    if health is Health.STALE:
        return sa.and_(state == "connected", _fresh_since() < stale_cutoff)
    if health is Health.HEALTHY:
        return sa.and_(state == "connected", _fresh_since() >= stale_cutoff)
    return health_condition(health) if health is not Health.ATTENTION else _attention()


def health_case(now: datetime, thresholds: HealthThresholds | None = None) -> ColumnElement[str]:
    """A SQL expression giving each link's verdict at ``now`` (for GROUP BY counts)."""
    whens = [
        (health_condition_at(h, now, thresholds), h.value)
        for h in Health
        if h is not Health.ATTENTION
    ]
    return sa.case(*whens, else_=Health.ATTENTION.value)


def refresh_issue_condition(issue: str) -> ColumnElement[bool]:
    """Connected links whose worst product refresh is ``issue`` (``failed`` or ``pending``).

    An index range on ``(refresh_issue, state)``; links in error have failed products too, but
    their error is what staff act on, so they are not counted here.
    """
    if issue not in REFRESH_ISSUES:
        raise ValueError(f"unknown refresh issue {issue!r}; known: {', '.join(REFRESH_ISSUES)}")
    return sa.and_(Link.refresh_issue == issue, Link.state == "connected")


def refresh_issue_counts(session: Session) -> dict[str, int]:
    """How many connected links have a failed, and a pending, product refresh."""
    rows = session.execute(
        sa.select(Link.refresh_issue, sa.func.count())
        .where(Link.refresh_issue.in_(REFRESH_ISSUES), Link.state == "connected")
        .group_by(Link.refresh_issue)
    ).all()
    counts = dict.fromkeys(REFRESH_ISSUES, 0)
    counts.update({str(issue): int(n) for issue, n in rows})
    return counts


@dataclass(frozen=True, slots=True)
class ProductRefresh:
    """One product of a link, as the link detail shows it."""

    product: str
    state: str  # fetched | not_fetched | pending | failed
    refreshed_at: datetime | None
    last_attempted_at: datetime | None
    error_code: str | None
    error_message: str | None


def product_refreshes(session: Session, link_id: str) -> list[ProductRefresh]:
    """The stored products of a link, failed and pending ones first."""
    rows = session.scalars(sa.select(LinkProduct).where(LinkProduct.link_id == link_id)).all()
    order = {REFRESH_FAILED: 0, REFRESH_PENDING: 1}
    return [
        ProductRefresh(
            product=row.product,
            state=row.refresh_state,
            refreshed_at=row.refreshed_at,
            last_attempted_at=row.last_attempted_at,
            error_code=row.error_code,
            error_message=row.error_message,
        )
        for row in sorted(rows, key=lambda r: (order.get(r.refresh_state, 2), r.product))
    ]


@dataclass(frozen=True, slots=True)
class Playbook:
    title: str
    meaning: str
    tell_the_customer: str
    action: str


_RELINK_ACTION = (
    "Relink the link from its page, or send the customer a relink link if they are not on the "
    "phone with you."
)
_WAIT_ACTION = (
    "Do not relink. MoneyKit retries by itself; the worker re-reads the link and the row turns "
    "healthy when it recovers. Escalate if it lasts more than a day."
)

PLAYBOOKS: dict[str, Playbook] = {
    "auth_expired": Playbook(
        "Bank login expired",
        "The bank session lapsed: the password changed, consent expired or was revoked.",
        "Your bank asks you to log in again to keep your accounts connected.",
        _RELINK_ACTION,
    ),
    "invalid_credentials": Playbook(
        "Wrong bank credentials",
        "The bank did not accept the username or password last submitted.",
        "Please reconnect with the username and password you use on your bank's website.",
        _RELINK_ACTION,
    ),
    "user_input_incorrect": Playbook(
        "Wrong security answer or code",
        "An MFA code or security answer was not accepted by the bank.",
        "Please reconnect and enter the newest code your bank sends you.",
        _RELINK_ACTION,
    ),
    "user_oauth_denied": Playbook(
        "Access refused at the bank",
        "The customer declined to share access on the bank's own page.",
        "To keep your accounts connected, reconnect and approve access on your bank's page.",
        _RELINK_ACTION + " If the customer does not want to share, leave the link as it is.",
    ),
    "user_setup_required": Playbook(
        "Customer must fix something at the bank",
        "The bank needs the customer to act first (accept terms, unlock or update the account).",
        "Please log in to your bank's website or app, resolve the message shown there, then "
        "reconnect.",
        "Ask the customer to sort it out with the bank first, then relink.",
    ),
    "incomplete": Playbook(
        "Connection not finished",
        "The link is partly done and waits for the customer (permissions, terms). It does not "
        "time out.",
        "Your bank connection was not finished. Please complete it.",
        _RELINK_ACTION,
    ),
    "user_error": Playbook(
        "Customer left Connect",
        "The customer abandoned or failed inside Connect; this link will not recover.",
        "Your connection was not completed. You can start a new one whenever you like.",
        "Start a new link for the customer; a relink does not repair this.",
    ),
    "no_accounts": Playbook(
        "No usable accounts",
        "The bank returned no accounts with the data we asked for.",
        "We could not find accounts we can use at this bank. Another bank may work.",
        "Do not retry automatically. Explain to the customer; suggest another institution.",
    ),
    "institution_error": Playbook(
        "Bank unavailable",
        "The bank is down or in maintenance.",
        "Your bank is not responding right now. Nothing to do on your side; it should recover.",
        _WAIT_ACTION,
    ),
    "provider_error": Playbook(
        "Data provider failure",
        "The data provider behind MoneyKit failed.",
        "We are having trouble reaching your bank. Nothing to do on your side.",
        _WAIT_ACTION,
    ),
    "system_error": Playbook(
        "MoneyKit internal error",
        "MoneyKit had an internal error.",
        "We are having a temporary problem. Nothing to do on your side.",
        _WAIT_ACTION,
    ),
    "stuck_awaiting_token_exchange": Playbook(
        "Link never completed on our side",
        "The customer finished Connect but Linkdesk never exchanged the token (the success "
        "message was lost or the exchange failed). The link is unusable until exchanged.",
        "Your connection did not finish on our side. Please connect the bank again.",
        "Check the Connect session of this link in the activity log; if it shows a failure, start "
        "a new link for the customer. Report repeated cases: something loses Connect results.",
    ),
    "stuck_connecting": Playbook(
        "Customer left Connect midway",
        "The link was started but the customer never finished Connect.",
        "Your bank connection was not finished. You can start again whenever you like.",
        "Nothing to repair; offer to start a new link if the customer still wants one.",
    ),
    "product_refresh_failed": Playbook(
        "A data refresh failed",
        "The link is connected, but MoneyKit's last refresh of one of its products failed (see "
        "the product's error below); the data it had stays readable but may be out of date.",
        "Some of your data may be out of date; we are looking into it.",
        "Timeouts, rate limits and institution errors clear by themselves: the next refresh "
        "usually lands. no_permission needs a relink asking for the product; not_supported and "
        "no_accounts will not change. Escalate to MoneyKit if it keeps failing.",
    ),
    "product_refresh_pending": Playbook(
        "A data refresh is running",
        "MoneyKit is fetching one of the link's products (a refresh or a prefetch that has not "
        "landed yet); the worker re-reads the link when MoneyKit says it finished.",
        "We are updating your data; this takes a moment.",
        "Nothing to do. If it is still pending after an hour, trigger a sync of the link.",
    ),
    "stale": Playbook(
        "No fresh data",
        "The link says connected, but MoneyKit has not refreshed its data for longer than the "
        "stale threshold.",
        "Your data may be out of date; we are looking into it.",
        "Check the worker panel (is Linkdesk reading links?) and the product errors on the link. "
        "An admin can trigger a sync of this link; escalate to MoneyKit if it stays stale.",
    ),
}


def playbook_for(reason: str | None) -> Playbook | None:
    """The playbook for a verdict reason (or an error code), if there is one."""
    return PLAYBOOKS.get(reason or "")
