"""The dashboard's one way to its services: the process's own, built by the core's bootstrap.

`get_services()` returns `linkdesk.bootstrap.process_services()`, the same object `server.py`
uses for the webhook route, the health probe, metrics and the worker thread, so a page and the
worker share one store pool and one MoneyKit budget. Tests configure it through environment
variables (DATABASE_URL, MONEYKIT_BASE_URL...) and call `get_services.clear()` between runs.
"""

from __future__ import annotations

import streamlit as st

from linkdesk.bootstrap import (
    Services,
    forget_process_services,
    process_services,
    process_services_built,
)


class _ProcessServices:
    """Callable as a function; `clear()` makes the next call build the services again."""

    def __call__(self) -> Services:
        if process_services_built():
            return process_services()
        # The first build opens (and may migrate) the store: say so rather than show a blank page.
        with st.spinner("Opening the Linkdesk store…"):
            return process_services()

    def clear(self) -> None:
        forget_process_services()


get_services = _ProcessServices()


def theme_is_dark() -> bool:
    # st.context.theme.type is None before the browser has reported its theme (and in AppTest).
    return st.context.theme.type == "dark"
