"""The detail panel of one link: institution card, accounts, history and the relink action."""

from __future__ import annotations

import streamlit as st

from linkdesk.auth import Permission
from linkdesk.moneykit.errors import MoneyKitError
from linkdesk.services import LeaseHeld, LinkNotFound, RelinkNotNeeded
from linkdesk.store.queries import Health, LinkDetail
from ui import connect_flow
from ui.auth import require_actor
from ui.render import error_label, health_label, institution_card_html
from ui.wiring import get_services, theme_is_dark


def render_link_detail(link_id: str) -> None:
    services = get_services()
    detail = services.links.get_link(link_id)
    if detail is None:
        st.warning(f"No link with id {link_id} is in the store. It may not be synced yet.")
        return
    row = detail.row
    st.html(institution_card_html(row, dark=theme_is_dark()))

    cols = st.columns(4)
    cols[0].metric("Health", health_label(row.health))
    cols[1].metric("State", row.state)
    cols[2].metric("Customer", row.customer_id or "—")
    last_update = row.products_refreshed_at or row.last_synced_at or row.updated_at
    cols[3].metric("Last update (UTC)", f"{last_update:%d %b %H:%M}" if last_update else "—")
    if row.error_code:
        st.caption(f"Error: {error_label(row.error_code)}")

    _relink_action(detail)

    st.subheader("Accounts", divider="gray")
    if detail.accounts:
        st.dataframe(
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
            hide_index=True,
            width="stretch",
        )
    else:
        st.caption("No accounts stored for this link.")

    history, sessions, audit = st.tabs(["State history", "Connect sessions", "Audit"])
    with history:
        if detail.state_changes:
            st.dataframe(
                [
                    {
                        "When": change.at,
                        "From": f"{change.from_state or '—'} {change.from_error or ''}".strip(),
                        "To": f"{change.to_state} {change.to_error or ''}".strip(),
                        "Source": change.source,
                    }
                    for change in detail.state_changes
                ],
                hide_index=True,
                width="stretch",
            )
        else:
            st.caption("No state change recorded yet.")
    with sessions:
        if detail.sessions:
            st.dataframe(
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
                hide_index=True,
                width="stretch",
            )
        else:
            st.caption("No Connect session for this link yet.")
    with audit:
        entries = services.audit.entries(20, link_id=link_id)
        if entries:
            st.dataframe(
                [
                    {
                        "When": entry.at,
                        "Who": entry.actor,
                        "Action": entry.action,
                        "Outcome": entry.outcome,
                        "Detail": entry.detail or "",
                    }
                    for entry in entries
                ],
                hide_index=True,
                width="stretch",
            )
        else:
            st.caption("No staff action on this link yet.")


def _relink_action(detail: LinkDetail) -> None:
    services = get_services()
    row = detail.row
    slot = f"relink-{row.link_id}"
    actor = require_actor()
    if row.health is Health.NEEDS_RELINK and not connect_flow.is_open(slot):
        st.error(
            f"This link needs the customer: {error_label(row.error_code)}. "
            "Relink opens MoneyKit Connect for this same link.",
            icon="🔴",
        )
        if not actor.can(Permission.RELINK):
            st.caption("A support agent can relink it; your role can only look.")
        elif st.button("Relink", type="primary", key=f"relink-button-{row.link_id}"):
            try:
                started = services.sessions.start_relink(link_id=row.link_id, actor=actor)
            except RelinkNotNeeded:
                st.info("This link no longer needs a relink.")
            except LeaseHeld as held:
                st.warning(str(held))
            except LinkNotFound:
                st.warning("This link is no longer known to Linkdesk.")
            except MoneyKitError as error:
                st.error(f"MoneyKit could not start a relink: {error.user_message}")
            else:
                connect_flow.begin(slot, started)
                st.rerun()
    connect_flow.render(slot)
