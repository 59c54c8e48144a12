"""MoneyKit Connect as a Streamlit custom component (Components v2).

The frontend bundles the real npm ``@moneykit/connect`` 0.3.28 launcher and runs it in
the app's own document. Every launcher callback (each Connect event, the success, the
relink success, the exit) is appended to a cumulative, numbered log that the component
keeps in its *state* under the key ``"log"``; :func:`moneykit_connect` returns that log, parsed
once here by the core's one parser into typed :class:`~linkdesk.connect_log.LogEntry` objects.
Callers apply only the entries they have not applied yet, by ``(session_id, seq)``, so
reruns and re-sent logs never apply anything twice.

The component is registered once, when this module is imported. Build the frontend
first (``make setup``, or ``npm ci && npm run build`` in ``frontend/``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import streamlit as st

from components.moneykit_connect.contract import (
    LaunchArgs,
    parse_log,
    sanitize_log,
    validate_connect_host,
    validate_launch,
)
from linkdesk.connect_log import LogEntry

__all__ = [
    "COMPONENT_NAME",
    "ComponentNotBuiltError",
    "LaunchArgs",
    "log_in_state",
    "moneykit_connect",
    "sanitize_log",
    "validate_connect_host",
    "validate_launch",
]

COMPONENT_NAME = "linkdesk.moneykit_connect"
BUNDLE_PATH = Path(__file__).parent / "frontend" / "dist" / "index.js"
LOG_STATE_KEY = "log"

_HTML = '<p class="mkc-status" role="status" aria-live="polite"></p>'

# Styles stay inside the component's shadow root; the Connect overlay itself is appended
# to document.body by the launcher and is not affected by them.
_CSS = """
.mkc-status {
  margin: 0;
  font-family: var(--st-font, sans-serif);
  font-size: 0.875rem;
  line-height: 1.5;
  color: var(--st-text-color);
  opacity: 0.8;
}
.mkc-status:empty {
  display: none;
}
"""


class ComponentNotBuiltError(RuntimeError):
    """The frontend bundle is missing: the npm build has not run."""


def load_bundle(path: Path = BUNDLE_PATH) -> str:
    """The built frontend bundle, checked to be usable as inline CCv2 JavaScript."""
    try:
        bundle = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComponentNotBuiltError(
            f"The MoneyKit Connect component is not built ({path} is missing). "
            "Run `make setup` (or `npm ci && npm run build` in "
            "components/moneykit_connect/frontend) and start the app again."
        ) from None
    # Streamlit takes a js string without a newline for a file path; the build puts a
    # comment line first, so a bundle without one was not made by our build.
    if not bundle.startswith("//") or "\n" not in bundle:
        raise ComponentNotBuiltError(
            f"{path} does not look like the output of `npm run build`; run `make setup` again."
        )
    return bundle


_mount = st.components.v2.component(
    COMPONENT_NAME,
    html=_HTML,
    css=_CSS,
    js=load_bundle(),
    isolate_styles=True,
)


def _keep_log() -> None:
    """State-change callback. Streamlit requires one for a state key with a default;
    the log is read from the mount's return value, so there is nothing to do here."""


def moneykit_connect(
    *,
    mode: Literal["link", "relink", "continue"],
    session_id: str,
    connect_host: str,
    key: str,
    link_session_token: str | None = None,
    redirect_url: str | None = None,
    color_scheme: Literal["light", "dark"] = "light",
    on_change: Callable[[], None] | None = None,
) -> list[LogEntry]:
    """Open MoneyKit Connect once for ``session_id`` and return its event log so far.

    Parameters
    ----------
    mode
        ``"link"`` (new link, needs ``link_session_token``), ``"relink"`` (repair a link,
        needs a token from a link session created with ``existing_link_id``) or
        ``"continue"`` (the OAuth return page, needs ``redirect_url``).
    session_id
        Our id for this Connect session. Connect is launched once per id and page: a
        rerun or a remount with the same id shows the same session and re-sends its
        log, it never opens Connect again. Use a new id to start over.
    connect_host
        Origin of the hosted Connect UI, e.g. ``"https://connect.moneykit.com"``. Must
        be a bare origin; see :func:`validate_connect_host`.
    key
        Stable Streamlit key. The log lives in the component's state under this key.
    link_session_token, redirect_url
        See ``mode``. The token is sent to the browser (the launcher needs it) but is
        never shown.
    color_scheme
        Passed to Connect as its colour scheme.
    on_change
        Called when the log changes, before the page's script runs again (read the log with
        :func:`log_in_state`): acting on an end there lets that same run show the outcome,
        instead of a run that acts and a second one that shows.

    Returns
    -------
    list[LogEntry]
        The entries recorded for this session, ordered by ``seq`` (1, 2, 3…), each with
        ``session_id``, ``seq``, ``type``, ``at`` and ``data`` (``to_dict()`` gives the
        component's JSON shape), ``type`` one of
        ``"event"``, ``"success"`` (data: ``exchangeable_token``, ``institution``,
        ``link_id``), ``"relink_success"`` (data: ``institution``, ``link_id``) or
        ``"exit"`` (data: ``error``, a LinkExitError or None). Malformed entries are
        left out. The same entries come back on every rerun; apply each
        ``(session_id, seq)`` once.

    Raises
    ------
    ValueError
        If the arguments do not fit ``mode`` or ``connect_host`` is not a bare origin.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string; the event log is kept under it")
    launch = validate_launch(
        mode=mode,
        session_id=session_id,
        connect_host=connect_host,
        link_session_token=link_session_token,
        redirect_url=redirect_url,
        color_scheme=color_scheme,
    )
    result = _mount(
        key=key,
        data=launch.to_component_data(),
        default={LOG_STATE_KEY: []},
        on_log_change=on_change or _keep_log,
    )
    return parse_log(result.get(LOG_STATE_KEY), session_id=session_id)


def log_in_state(key: str, *, session_id: str) -> list[LogEntry]:
    """The log the component keyed ``key`` holds in session state (for ``on_change``
    callbacks, which run before the component is mounted again); same shape as
    :func:`moneykit_connect` returns, empty when there is none."""
    value = st.session_state.get(key)
    raw = value.get(LOG_STATE_KEY) if isinstance(value, Mapping) else None
    return parse_log(raw, session_id=session_id)
