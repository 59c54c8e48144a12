"""Demo: the switch, the scripted scenarios a presenter plays live, and the one-click reset."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from linkdesk.auth import Permission
from linkdesk.demo import DemoRefused, SandboxUnavailable
from linkdesk.errors import ServiceError
from linkdesk.store.queries import Health
from ui.auth import require_actor
from ui.demo import forget_demo_switch
from ui.errors import guard
from ui.render import plain
from ui.wiring import get_services

LIVE_SECONDS = 2.0
SPEEDS = {1.0: "Real time (about 2 minutes)", 2.0: "2× faster", 5.0: "5× faster"}

services = get_services()
demo = services.demo
actor = require_actor()
may_switch = actor.can(Permission.DEMO_RESET)
may_play = actor.can(Permission.DEMO_SCENARIO)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "never"


def _switch_changed() -> None:
    wanted = bool(st.session_state["demo.switch"])
    try:
        demo.set_enabled(actor, wanted)
    except (DemoRefused, ServiceError) as refused:
        st.session_state["demo.switch"] = not wanted
        st.session_state["demo.flash"] = ("error", str(refused))
    else:
        forget_demo_switch()  # the banner follows at once in this process
        st.session_state["demo.flash"] = (
            "success",
            "Demo mode is on." if wanted else "Demo mode is off.",
        )


st.title("Demo")
status = demo.status()
flash = st.session_state.pop("demo.flash", None)
if flash:
    (st.error if flash[0] == "error" else st.success)(flash[1])

if may_switch:
    st.toggle(
        "Demo mode",
        value=status.enabled,
        key="demo.switch",
        on_change=_switch_changed,
        help="Only against the offline sandbox: switching on is refused for any other MoneyKit.",
    )
    st.caption(
        "Decided by the LINKDESK_DEMO_MODE setting"
        if status.decided_by == "setting"
        else f"Switched {'on' if status.enabled else 'off'} by {status.decided_by} "
        f"on {_when(status.decided_at)}"
    )

if not status.enabled:
    st.info(
        "Demo mode is off. With it on, this page builds a synthetic world of thousands of links "
        "with months of history in the offline sandbox, and plays scripted scenarios live "
        "(a bank's OAuth outage, a credentials rotation) for stakeholders."
        + ("" if may_switch else " Ask an admin to switch it on.")
    )
    st.stop()

world = st.container(border=True)
world.subheader("The demo world")
if status.world_built_at is None:
    world.warning(
        f"The store holds {status.links_in_store:,} links from the sandbox, but the demo world "
        "(thousands of links, months of history) has not been built yet. Reset it below."
    )
else:
    world.markdown(
        f"**{status.world_links or 0:,} links** with {services.settings.demo_history_days} days "
        f"of history, built {_when(status.world_built_at)} by {status.world_built_by} "
        f"(seed {status.seed}). The store holds {status.links_in_store:,} links now."
    )

st.subheader("Scenarios")
try:
    available, _runs = demo.scenarios()
except (DemoRefused, SandboxUnavailable) as problem:
    st.error(f"The sandbox cannot play scenarios right now: {plain(problem)}")
    available = []

for scenario in available:
    with st.container(border=True):
        st.markdown(f"**{scenario.title}**")
        st.caption(scenario.description)
        if not may_play:
            continue
        bank = scenario.default_institution_id
        if bank is None:
            st.warning("No bank in the sandbox has a connected link this scenario fits.")
            continue
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
                run = demo.start_scenario(actor, scenario.name, institution_id=bank, speed=speed)
            except ServiceError as refused:
                st.error(plain(refused))
            else:
                st.toast(f"{run.title} started on {plain(run.institution_name)}.", icon="🎬")


@st.fragment(run_every=LIVE_SECONDS)
def _live() -> None:
    """What the sandbox is playing, and what Linkdesk sees of it, refreshed every 2 s."""
    with guard("the demo live panel"):
        _available, runs = demo.scenarios()
        counts = services.links.health_summary(max_age=LIVE_SECONDS).counts
        cols = st.columns(4)
        cols[0].metric("Healthy links", f"{counts[Health.HEALTHY]:,}")
        cols[1].metric("Need a relink", f"{counts[Health.NEEDS_RELINK]:,}")
        cols[2].metric("Wait (MoneyKit retries)", f"{counts[Health.WAIT]:,}")
        status = services.links.worker_status(max_age=LIVE_SECONDS)
        cols[3].metric("Webhooks queued", status.webhooks_pending)
        if not runs:
            st.caption("No scenario has run since the last reset.")
            return
        for run in runs[:5]:
            done = run.steps_done / run.steps_total if run.steps_total else 1.0
            label = {"running": "▶️ playing", "finished": "✅ finished", "stopped": "⏹ stopped"}
            st.progress(
                done,
                text=f"{label.get(run.status, run.status)} · **{run.title}** on "
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
        if may_play and playing and st.button("Stop the running scenarios", key="demo.stop"):
            demo.stop_scenarios(actor)
            st.rerun(scope="fragment")


st.subheader("Live")
st.caption("What the sandbox is playing, and what Linkdesk sees of it (every 2 s).")
_live()

if may_switch:
    st.subheader("Reset")
    st.caption(
        f"Rebuilds the world from seed {status.seed}: the sandbox regenerates "
        f"{services.settings.demo_links:,} links, Linkdesk forgets its link data and discovers "
        "them again through the API, then writes their history. The audit log is kept."
    )
    confirm = st.checkbox("I want to throw away the current demo state", key="demo.confirm")
    if st.button("Reset the demo world", icon="♻️", disabled=not confirm, key="demo.reset"):
        with st.status("Rebuilding the demo world…", expanded=True) as progress:
            bar = st.progress(0.0)

            def _progress(text: str, fraction: float) -> None:
                bar.progress(min(1.0, fraction), text=text)

            try:
                report = demo.reset(actor, _progress)
            except ServiceError as refused:
                progress.update(label="The reset did not finish", state="error")
                st.error(str(refused))
            else:
                progress.update(label=f"Demo world rebuilt: {report.summary}", state="complete")
                # Count the new world now (and store it), so every page shows its totals at once.
                services.links.health_summary()
