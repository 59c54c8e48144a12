"""The detail panel of one link: institution card, verdict and playbook, actions, history."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import streamlit as st

from linkdesk.auth import Actor, Permission
from linkdesk.health import Health, playbook_for
from linkdesk.moneykit.errors import MoneyKitError
from linkdesk.read.activity import RelinkInProgress
from linkdesk.read.link_detail import LinkDetail
from linkdesk.services import StartedSession
from linkdesk.services.errors import ServiceError
from ui import connect_flow
from ui.auth import require_actor
from ui.errors import report
from ui.render import error_label, health_label, institution_card_html, labelled_value_html, plain
from ui.wiring import get_services, theme_is_dark


def render_link_detail(link_id: str) -> None:
    services = get_services()
    detail = services.link_detail.get_link(link_id)
    if detail is None:
        st.warning(f"No link with id {plain(link_id)} is in the store. It may not be synced yet.")
        return
    actor = require_actor()
    row = detail.row
    st.html(institution_card_html(row, dark=theme_is_dark()))

    # Health gets the widest column: a verdict like "Needs relink" in metric type needs the room.
    cols = st.columns([1.7, 0.9, 1.1, 1.3])
    cols[0].metric("Health", health_label(row.health))
    cols[1].metric("State", plain(row.state))
    # Not a metric: its large type cuts a customer id short; this wraps instead.
    cols[2].html(labelled_value_html("Customer", row.customer_id or "—", testid="link-customer"))
    cols[2].page_link(
        "app_pages/customer.py",
        label="Customer timeline",
        icon="👤",
        query_params={"customer": row.customer_id or ""},
        disabled=not row.customer_id,
    )
    # The time the Links table shows and sorts by.
    cols[3].metric("Last update (UTC)", f"{row.updated_at:%d %b %H:%M}")
    if row.error_code:
        st.caption(f"Error: {plain(error_label(row.error_code))}")

    render_playbook(row.health_reason)
    render_product_refresh(link_id, shown_reason=row.health_reason)
    render_relink_action(detail, actor)
    _customer_link_action(detail, actor)

    st.subheader("Accounts", divider="gray")
    _table(
        [
            {
                "Name": account.name,
                "Type": account.account_type,
                "Number": f"•••• {account.mask}" if account.mask else "—",
                "Balance": account.balance_current,
                "Available": account.balance_available,
                "Currency": account.currency,
            }
            for account in detail.accounts
        ],
        empty="No accounts stored for this link (MoneyKit gives none while it needs a relink).",
    )
    _history(detail, actor)


def render_playbook(reason: str | None) -> None:
    playbook = playbook_for(reason)
    if playbook is None:
        return
    with st.container(border=True):
        st.markdown(f"**{playbook.title}**")
        meaning, customer, action = st.columns(3)
        meaning.caption("What it means")
        meaning.write(playbook.meaning)
        customer.caption("Tell the customer")
        customer.write(playbook.tell_the_customer)
        action.caption("Do this")
        action.write(playbook.action)


def relink_slot(link_id: str) -> str:
    return f"relink-{link_id}"


def relink_started_here(link_id: str) -> bool:
    """A relink of this link is open in this browser session, or has just finished."""
    slot = relink_slot(link_id)
    return connect_flow.is_open(slot) or connect_flow.has_result(slot)


def _start_connect(slot: str, start: Callable[[], StartedSession], where: str) -> None:
    """Run ``start`` (a service call that opens a Connect session) and open Connect for it."""
    try:
        started = start()
    except ServiceError as refused:
        st.warning(plain(refused))
    except MoneyKitError as error:
        report(error, where=where, key=f"{where}-{slot}")
    else:
        connect_flow.begin(slot, started)
        st.rerun()


def _lease_actions(detail: LinkDetail, actor: Actor, lease: RelinkInProgress, slot: str) -> None:
    """A reservation with no Connect open in this browser: its holder may open Connect again
    or give it up; an admin may take it over, saying why."""
    services = get_services()
    link_id = detail.row.link_id
    if lease.holder == actor.name:
        st.info(
            f"You started a relink of this link at {lease.since:%H:%M} UTC; it is reserved for "
            f"you until {lease.expires_at:%H:%M} UTC. Open Connect again, or release it so "
            "others can relink it.",
            icon="⏳",
        )
        resume, release, _ = st.columns([1, 1, 3])
        if resume.button("Resume", type="primary", key=f"relink-resume-{link_id}"):
            _start_connect(
                slot,
                lambda: services.sessions.resume_relink(link_id, actor=actor),
                "relink.resume",
            )
        if release.button("Release", key=f"relink-release-{link_id}"):
            try:
                services.sessions.release_relink(link_id, actor=actor)
            except ServiceError as refused:
                st.warning(plain(refused))
            else:
                st.toast("Reservation released; anyone may relink this link now.")
                st.rerun()
        return
    st.warning(
        f"Relink in progress by **{plain(lease.holder)}** since {lease.since:%H:%M} UTC "
        f"(released at {lease.expires_at:%H:%M} UTC if abandoned).",
        icon="⏳",
    )
    if not actor.can(Permission.RELINK_TAKE_OVER):
        return
    with st.form(f"relink-take-over-{link_id}", border=True):
        reason = st.text_input(
            f"Why take this relink over from {plain(lease.holder)}? (kept in the audit log)",
            placeholder="e.g. agent left for the day, customer waiting on the phone",
        )
        if st.form_submit_button("Take over"):

            def take_over() -> StartedSession:
                services.sessions.take_over_relink(
                    link_id, actor=actor, reason=reason, seen_session=lease.session_id
                )
                return services.sessions.start_relink(
                    link_id=link_id, actor=actor, reason=reason.strip()
                )

            _start_connect(slot, take_over, "relink.take_over")


def render_relink_action(detail: LinkDetail, actor: Actor, *, label: str = "Relink") -> None:
    """The relink button (for roles that may) and, once started, Connect in relink mode."""
    services = get_services()
    row = detail.row
    slot = relink_slot(row.link_id)
    lease = detail.relink_in_progress
    if lease is not None and not connect_flow.is_open(slot):
        _lease_actions(detail, actor, lease, slot)
    # == rather than `is`: Streamlit re-imports edited modules in a running server, and an enum
    # member from before the reload is equal to, but not the same object as, one from after.
    elif row.health == Health.NEEDS_RELINK and not connect_flow.is_open(slot):
        if not actor.can(Permission.RELINK):
            st.caption("A support agent can relink this link; your role can only look.")
        else:
            reason = st.text_input(
                "Reason for the relink (kept in the audit log)",
                key=f"relink-reason-{row.link_id}",
                placeholder="e.g. customer called about missing transactions",
            )
            if st.button(label, type="primary", key=f"relink-button-{row.link_id}"):
                _start_connect(
                    slot,
                    lambda: services.sessions.start_relink(
                        link_id=row.link_id, actor=actor, reason=reason.strip() or None
                    ),
                    "relink.start",
                )
    connect_flow.render(slot)


def render_repair_panel(detail: LinkDetail, actor: Actor) -> None:
    """Why one link is broken and how to repair it, for the customer timeline.

    The same parts as the Links page's detail (playbook, relink action, customer relink link),
    so a relink started here is the same relink, under the same lease and audit.
    """
    row = detail.row
    with st.container(border=True, key=f"repair-{row.link_id}"):
        st.html(institution_card_html(row, dark=theme_is_dark()))
        # Plain text rather than st.metric: a metric's large type cuts "Needs relink" short in
        # a column this narrow.
        verdict, why = st.columns([1, 3])
        with verdict:
            st.caption("Health")
            st.markdown(f"**{health_label(row.health)}**")
            st.caption(f"State: {plain(row.state)}")
        with why:
            st.caption("Why")
            st.markdown(_why(detail))
        render_playbook(row.health_reason)
        render_relink_action(detail, actor, label="Start relink")
        _customer_link_action(detail, actor)
        st.page_link(
            "app_pages/links.py",
            label="Accounts, history and notes of this link",
            icon="🔗",
            query_params={"link": row.link_id},
        )


def _why(detail: LinkDetail) -> str:
    """The state change that put the link where it is, in words."""
    row = detail.row
    error = plain(error_label(row.error_code) or "no error code")
    latest = detail.state_changes[0] if detail.state_changes else None
    if latest is None:
        return (
            f"MoneyKit reports the link as **{plain(row.state)}** ({error}); "
            "no change recorded yet."
        )
    before = plain(
        f"{latest.from_state}" + (f" ({latest.from_error})" if latest.from_error else "")
    )
    now = plain(
        f"{latest.to_state}" + (f" — {error_label(latest.to_error)}" if latest.to_error else "")
    )
    source = plain(latest.source)
    if latest.from_state is None:
        return f"First seen on {latest.at:%d %b %H:%M} UTC as **{now}** (through {source})."
    return (
        f"On {latest.at:%d %b %H:%M} UTC it went from {before} to **{now}** (reported by {source})."
    )


def _customer_link_action(detail: LinkDetail, actor: Actor) -> None:
    """Support can send the customer a single-use URL that repairs this one link."""
    row = detail.row
    if row.health != Health.NEEDS_RELINK or not actor.can(Permission.CUSTOMER_LINK):
        return
    created_key = f"customer-link-{row.link_id}"
    # Stateful (kept by the server): a rerun that redraws the detail, such as the first runs of
    # the page or a sibling fragment, must not close the form under the agent's typing.
    with st.expander(
        "Send the customer a relink link",
        key=f"customer-link-open-{row.link_id}",
        on_change="rerun",
    ):
        reason = st.text_input(
            "Reason (kept in the audit log)", key=f"customer-link-reason-{row.link_id}"
        )
        if st.button("Create a relink link", key=f"customer-link-button-{row.link_id}"):
            try:
                created = get_services().customer_links.create(
                    row.link_id, actor, reason=reason.strip() or None
                )
            except ServiceError as refused:
                st.warning(plain(refused))
            else:
                st.session_state[created_key] = (created.token, created.expires_at)
        if created_key in st.session_state:
            token, expires_at = st.session_state[created_key]
            st.code(f"{_dashboard_origin()}/repair?token={token}", language=None)
            st.caption(
                f"Works once, until {expires_at:%d %b %H:%M} UTC. Send it to the customer only; "
                "it is not shown again."
            )


def _dashboard_origin() -> str:
    url = urlsplit(st.context.url or "")
    return f"{url.scheme}://{url.netloc}" if url.scheme and url.netloc else ""


def _history(detail: LinkDetail, actor: Actor) -> None:
    # Only the open tab is drawn (and its rows read): choosing one reruns the page, and the tab
    # chosen stays open from one link to the next.
    tabs = st.tabs(list(_HISTORY_TABS), on_change="rerun", key="link.history_tab")
    for tab, draw in zip(tabs, _HISTORY_TABS.values(), strict=True):
        with tab:
            if tab.open is not False:
                draw(detail, actor)


def _state_history(detail: LinkDetail, _actor: Actor) -> None:
    _table(
        [
            {
                "When": change.at,
                "From": f"{change.from_state or '—'} {change.from_error or ''}".strip(),
                "To": f"{change.to_state} {change.to_error or ''}".strip(),
                "Source": change.source,
            }
            for change in detail.state_changes
        ],
        empty="No state change recorded yet.",
    )


def _connect_sessions(detail: LinkDetail, _actor: Actor) -> None:
    _table(
        [
            {
                "Started": session.started_at,
                "Mode": session.mode,
                "By": session.started_by,
                "Outcome": session.outcome,
                "Error": session.exit_error_id or "",
                "Events": session.event_count,
            }
            for session in detail.sessions
        ],
        empty="No Connect session for this link yet.",
    )


def _sync_attempts(detail: LinkDetail, _actor: Actor) -> None:
    _table(
        [
            {
                "When": attempt.at,
                "Kind": attempt.kind,
                "Outcome": attempt.outcome,
                "Error": attempt.error or "",
                "ms": attempt.duration_ms,
            }
            for attempt in detail.sync_attempts
        ],
        empty="The sync worker has not read this link yet.",
    )


def _webhooks(detail: LinkDetail, _actor: Actor) -> None:
    _table(
        [
            {
                "Received": delivery.received_at,
                "Event": delivery.event or "",
                "Verdict": delivery.verdict,
                "Reason": delivery.reason,
                "Attempt": delivery.attempt,
            }
            for delivery in get_services().deliveries.recent(20, link_id=detail.row.link_id)
        ],
        empty="No webhook received for this link yet.",
    )


def _audit_and_notes(detail: LinkDetail, actor: Actor) -> None:
    services = get_services()
    link_id = detail.row.link_id
    _table(
        [
            {
                "When": entry.at,
                "Who": entry.actor,
                "Role": entry.role or "",
                "Action": entry.action,
                "Outcome": entry.outcome,
                "Reason": entry.reason or "",
                "Detail": entry.detail or "",
            }
            for entry in services.audit.entries(30, link_id=link_id)
        ],
        empty="No staff action on this link yet.",
    )
    if actor.can(Permission.NOTE):
        with st.form(f"note-{link_id}", clear_on_submit=True):
            note = st.text_area("Add a note", max_chars=2000)
            if st.form_submit_button("Save note") and note.strip():
                services.audit.add_note(
                    actor,
                    link_id=link_id,
                    text=note.strip(),
                    customer_id=detail.row.customer_id,
                )
                st.toast("Note saved")
                st.rerun()


_HISTORY_TABS: dict[str, Callable[[LinkDetail, Actor], None]] = {
    "State history": _state_history,
    "Connect sessions": _connect_sessions,
    "Sync attempts": _sync_attempts,
    "Webhooks": _webhooks,
    "Audit and notes": _audit_and_notes,
}


def _table(rows: Sequence[dict[str, Any]], *, empty: str) -> None:
    if rows:
        st.dataframe(list(rows), hide_index=True, width="stretch")
    else:
        st.caption(empty)


_REFRESH_STATE_LABELS = {
    "failed": "⚠️ Failed",
    "pending": "⏳ In progress",
    "not_fetched": "Not fetched yet",
    "fetched": "Up to date",
}


def render_product_refresh(link_id: str, *, shown_reason: str | None = None) -> None:
    """The link's products as MoneyKit last reported them; a failed or pending refresh stands out.

    ``shown_reason``: the verdict reason whose playbook the panel already shows above (a refresh
    issue is the reason of a healthy link's verdict), so the same playbook is not shown twice.

    Self-contained (it reads its own rows), so the detail panel calls it with one line.
    """
    # Imported here so that this section stays one block apart from the panel above it.
    from linkdesk.health import REFRESH_REASONS, product_refreshes

    with get_services().store.read() as session:
        refreshes = product_refreshes(session, link_id)
    issue = next((r for r in refreshes if r.state in REFRESH_REASONS), None)
    if issue is None:
        return  # nothing failed or running: the Accounts table below says enough
    st.subheader("Data refresh", divider="gray")
    what = "failed" if issue.state == "failed" else "is still running"
    st.caption(
        f"MoneyKit's last refresh of {plain(issue.product)} {what}"
        + (f" ({plain(error_label(issue.error_code))})." if issue.error_code else ".")
    )
    if REFRESH_REASONS[issue.state] != shown_reason:
        render_playbook(REFRESH_REASONS[issue.state])
    _table(
        [
            {
                "Product": r.product,
                "Refresh": _REFRESH_STATE_LABELS.get(r.state, r.state),
                "Last refreshed (UTC)": r.refreshed_at,
                "Last attempt (UTC)": r.last_attempted_at,
                "Error": r.error_code or "",
                # MoneyKit's own words: shown as a table cell, never as Markdown.
                "Message": r.error_message or "",
            }
            for r in refreshes
        ],
        empty="",
    )
