"""Demo mode in the dashboard's frame: the banner every page shows, and who sees the Demo page."""

from __future__ import annotations

import logging

import sqlalchemy.exc
import streamlit as st

from linkdesk.auth import Actor, Permission
from ui.wiring import get_services

logger = logging.getLogger("linkdesk.dashboard")


# Read on every rerun of every page (the banner and the menu), so read from the store at most
# this often per process; the Demo page clears it when this process flips the switch.
SWITCH_MAX_AGE_S = 10


@st.cache_data(ttl=SWITCH_MAX_AGE_S, show_spinner=False)
def _switch(store: str) -> bool:
    return get_services().demo.is_enabled()


def demo_mode_on() -> bool:
    """Whether demo mode is on; False when the store cannot say (the page then reports why)."""
    try:
        return _switch(get_services().settings.database_url)
    except sqlalchemy.exc.SQLAlchemyError:
        logger.warning("could not read the demo switch; the page will report the store error")
        return False


def forget_demo_switch() -> None:
    """Read the switch afresh on the next run (this process has just flipped it)."""
    _switch.clear()


def demo_page_visible(actor: Actor, demo_on: bool) -> bool:
    # Admins always see it (they flip the switch there); presenters only while demo mode is on.
    return actor.can(Permission.DEMO_RESET) or (demo_on and actor.can(Permission.DEMO_SCENARIO))


def show_demo_banner() -> None:
    st.info(
        "**Demo mode** · every customer, bank link and number here is synthetic, served by the "
        "offline MoneyKit sandbox. Nothing in demo mode can reach a real MoneyKit.",
        icon="🎭",
    )
