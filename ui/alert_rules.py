"""The alert rules on the Alerts page: each rule's parameters and channels, editable by admins
with a reason that the audit log keeps."""

from __future__ import annotations

import streamlit as st

from linkdesk.alerts.rules import CHANNEL_NAMES, RULE_KINDS
from linkdesk.auth import Actor, Permission
from linkdesk.bootstrap import Services
from linkdesk.errors import ServiceError


def render_rules(services: Services, actor: Actor) -> None:
    """One expander per rule, kept open across reruns (a half-typed reason survives them)."""
    alerts = services.alerts
    can_edit = actor.can(Permission.SETTINGS)
    for rule in alerts.rules():
        with st.expander(
            f"{'🟢' if rule.enabled else '⚪'} {rule.name}",
            key=f"alerts.rule.open.{rule.id}",
            on_change="rerun",
        ):
            st.caption(RULE_KINDS[rule.kind].description)
            st.caption(f"Last changed by {rule.updated_by} at {rule.updated_at:%Y-%m-%d %H:%M} UTC")
            with st.form(f"alerts.rule.{rule.id}"):
                enabled = st.checkbox("Enabled", value=rule.enabled, disabled=not can_edit)
                params = {
                    p.name: st.number_input(
                        p.label,
                        min_value=p.minimum if not p.integer else int(p.minimum),
                        max_value=p.maximum if not p.integer else int(p.maximum),
                        value=(
                            float(rule.params.get(p.name, p.default))
                            if not p.integer
                            else int(rule.params.get(p.name, p.default))
                        ),
                        disabled=not can_edit,
                    )
                    for p in RULE_KINDS[rule.kind].params
                }
                channels = st.multiselect(
                    "Channels", CHANNEL_NAMES, default=rule.channels, disabled=not can_edit
                )
                renotify = st.number_input(
                    "Re-notify every (minutes)",
                    min_value=1,
                    max_value=10080,
                    value=rule.renotify_minutes,
                    disabled=not can_edit,
                )
                why = st.text_input("Reason (kept in the audit log)", disabled=not can_edit)
                if st.form_submit_button("Save rule", disabled=not can_edit):
                    try:
                        alerts.update_rule(
                            actor,
                            rule.id,
                            enabled=enabled,
                            params=params,
                            channels=list(channels),
                            renotify_minutes=int(renotify),
                            reason=why.strip() or None,
                        )
                    except (ValueError, ServiceError) as refused:
                        st.warning(str(refused))
                    else:
                        st.success("Saved.")
    if not can_edit:
        st.caption("Only admins can change the rules.")
