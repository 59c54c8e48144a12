"""Demo: the switch, the scripted scenarios a presenter plays live, and the one-click reset."""

from __future__ import annotations

from datetime import UTC, datetime

import streamlit as st

from linkdesk.auth import Permission
from linkdesk.demo import DemoRefused, SandboxUnavailable
from linkdesk.errors import ServiceError
from ui.auth import require_actor
from ui.demo import forget_demo_switch
from ui.demo_stage import live_panel, render_scenarios
from ui.render import plain
from ui.wiring import get_services

services = get_services()
demo = services.demo
actor = require_actor()
may_switch = actor.can(Permission.DEMO_RESET)


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

render_scenarios(services, actor, available)

st.subheader("Live")
st.caption("What the sandbox is playing, and what Linkdesk sees of it (every 2 s).")
live_panel(services, actor)

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
                services.totals.health_summary()
