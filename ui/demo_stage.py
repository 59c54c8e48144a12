"""The Demo page's stage: the scenario cards a presenter starts, and the live panel that shows
what the sandbox is playing and what Linkdesk sees of it."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from linkdesk.auth import Actor, Permission
from linkdesk.bootstrap import Services
from linkdesk.demo.sandbox import ScenarioInfo
from linkdesk.errors import ServiceError
from linkdesk.health import Health
from linkdesk.store.health_totals import RECOUNT_MAX_AGE
from ui.errors import guard
from ui.render import plain

LIVE_SECONDS = 2.0
SPEEDS = {1.0: "Real time (about 2 minutes)", 2.0: "2× faster", 5.0: "5× faster"}
RUN_LABELS = {"running": "▶️ playing", "finished": "✅ finished", "stopped": "⏹ stopped"}


def _scenario_card(services: Services, actor: Actor, scenario: ScenarioInfo) -> None:
    st.markdown(f"**{scenario.title}**")
    st.caption(scenario.description)
    if not actor.can(Permission.DEMO_SCENARIO):
        return
    bank = scenario.default_institution_id
    if bank is None:
        st.warning("No bank in the sandbox has a connected link this scenario fits.")
        return
    cols = st.columns([2, 2, 1], vertical_alignment="bottom")
    name = scenario.default_institution_name or bank
    cols[0].markdown(f"Plays on **{plain(name)}**, the largest bank it fits.")
    speed = cols[1].selectbox(
        "Pace",
        list(SPEEDS),
        format_func=SPEEDS.__getitem__,
        key=f"demo.speed.{scenario.name}",
    )
    if cols[2].button("Start", key=f"demo.start.{scenario.name}", type="primary"):
        try:
            run = services.demo.start_scenario(
                actor, scenario.name, institution_id=bank, speed=speed
            )
        except ServiceError as refused:
            st.error(plain(refused))
        else:
            st.toast(f"{run.title} started on {plain(run.institution_name)}.", icon="🎬")


def render_scenarios(services: Services, actor: Actor, available: Sequence[ScenarioInfo]) -> None:
    """One card per scenario; presenters get the pace and a Start button."""
    for scenario in available:
        with st.container(border=True):
            _scenario_card(services, actor, scenario)


@st.fragment(run_every=LIVE_SECONDS)
def live_panel(services: Services, actor: Actor) -> None:
    """What the sandbox is playing, and what Linkdesk sees of it, refreshed every 2 s."""
    with guard("the demo live panel"):
        _available, runs = services.demo.scenarios()
        # Moved at once by each applied webhook; never counted again every 2 s.
        counts = services.totals.health_summary(max_age=RECOUNT_MAX_AGE).counts
        cols = st.columns(4)
        cols[0].metric("Healthy links", f"{counts[Health.HEALTHY]:,}")
        cols[1].metric("Need a relink", f"{counts[Health.NEEDS_RELINK]:,}")
        cols[2].metric("Wait (MoneyKit retries)", f"{counts[Health.WAIT]:,}")
        status = services.worker_progress.status(max_age=LIVE_SECONDS)
        cols[3].metric("Webhooks queued", status.webhooks_pending)
        if not runs:
            st.caption("No scenario has run since the last reset.")
            return
        for run in runs[:5]:
            done = run.steps_done / run.steps_total if run.steps_total else 1.0
            st.progress(
                done,
                text=f"{RUN_LABELS.get(run.status, run.status)} · **{run.title}** on "
                f"{plain(run.institution_name)} · {plain(run.last_step)} · "
                f"{run.links_changed} link changes, "
                f"{run.links_still_broken} still broken",
            )
            if run.status == "running":
                st.page_link(
                    "app_pages/links.py",
                    label=f"Watch {plain(run.institution_name)}'s links",
                    icon="🔗",
                    query_params={"institution": run.institution_id},
                )
        playing = any(run.status == "running" for run in runs)
        may_play = actor.can(Permission.DEMO_SCENARIO)
        if may_play and playing and st.button("Stop the running scenarios", key="demo.stop"):
            services.demo.stop_scenarios(actor)
            st.rerun(scope="fragment")
