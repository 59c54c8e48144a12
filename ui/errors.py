"""Designed error panels: what went wrong in plain words, what to do, and a way to try again.

A page that fails (the database is locked or down, MoneyKit cannot be reached) must not show a
traceback: staff cannot act on one, and a traceback can carry SQL, URLs or values that do not
belong on a screen. `run_page` wraps the whole page, `guard` wraps a fragment (a fragment rerun
happens outside the page's wrapper). The full exception goes to the log with a short reference
that the panel shows, so an admin can find it.

Streamlit's control-flow exceptions (`st.rerun`, `st.stop`) derive from BaseException and pass
through untouched, as does the marker a fragment raises after it has handled its own error.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import httpx
import sqlalchemy.exc
import streamlit as st
from streamlit.errors import FragmentHandledException
from streamlit.runtime.scriptrunner_utils.exceptions import RerunException, StopException

from linkdesk.moneykit.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    MoneyKitError,
    RateLimitError,
)
from ui.render import plain

logger = logging.getLogger("linkdesk.dashboard")

# Passed on unchanged: Streamlit acts on them itself.
_CONTROL_FLOW = (RerunException, StopException, FragmentHandledException)
# The kinds of trouble a guarded part of the page has shown during the current full run, so the
# page's own panel does not repeat the same message right below it.
_SHOWN_KEY = "ui.errors.shown"

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Trouble:
    """An error told for people: a title, what it means, and what they can do."""

    kind: str  # database_locked | database_down | moneykit_down | moneykit_refused | unexpected
    title: str
    explanation: str
    what_to_do: str


def _database_locked(error: BaseException) -> bool:
    return "database is locked" in str(getattr(error, "orig", "") or "").lower()


def describe(error: BaseException) -> Trouble:
    """The plain-words version of ``error``; never includes the error's own text."""
    if isinstance(error, sqlalchemy.exc.OperationalError) and _database_locked(error):
        return Trouble(
            "database_locked",
            "The Linkdesk database is busy",
            "Another process is writing to the database and held its lock for longer than "
            "this page waits. Nothing was lost and nothing was changed.",
            "Try again in a few seconds. If it keeps happening, tell an admin: a long-running "
            "job or a second copy of Linkdesk may be holding the database.",
        )
    if isinstance(
        error,
        sqlalchemy.exc.OperationalError
        | sqlalchemy.exc.InterfaceError
        | sqlalchemy.exc.TimeoutError
        | sqlalchemy.exc.DisconnectionError,
    ):
        return Trouble(
            "database_down",
            "The Linkdesk database cannot be reached",
            "Linkdesk could not read its database, so this page cannot show current data. "
            "Nothing was changed.",
            "Try again in a minute. If it keeps failing, tell an admin: the database server may "
            "be down or the DATABASE_URL setting may point to the wrong place.",
        )
    if isinstance(error, APIConnectionError | APITimeoutError | httpx.TransportError):
        return Trouble(
            "moneykit_down",
            "MoneyKit cannot be reached",
            "Linkdesk could not connect to MoneyKit (or MoneyKit did not answer in time). The "
            "links stored in Linkdesk are still shown on the other pages.",
            "Try again in a few minutes. If MoneyKit stays unreachable, check MoneyKit's status "
            "page and tell an admin.",
        )
    if isinstance(error, RateLimitError):
        return Trouble(
            "moneykit_refused",
            "MoneyKit asked Linkdesk to slow down",
            "Too many requests reached MoneyKit in a short time.",
            "Wait a minute, then try again.",
        )
    if isinstance(error, APIStatusError) and error.status_code >= 500:
        return Trouble(
            "moneykit_down",
            "MoneyKit is having trouble",
            f"MoneyKit answered with an error on its side ({error.user_message}).",
            "Try again in a few minutes. If it lasts, check MoneyKit's status page and tell an "
            "admin.",
        )
    if isinstance(error, MoneyKitError):
        return Trouble(
            "moneykit_refused",
            "MoneyKit refused the request",
            error.user_message,
            "Try again; if MoneyKit refuses again, tell an admin and mention the reference below.",
        )
    return Trouble(
        "unexpected",
        "This page ran into a problem",
        "Something unexpected went wrong while drawing this page. Nothing was changed.",
        "Try again. If it happens again, tell an admin and mention the reference below.",
    )


def show_trouble(trouble: Trouble, *, reference: str | None = None, key: str = "page") -> None:
    """The designed panel for ``trouble``, with a Try again button."""
    with st.container(border=True, key=f"trouble-{key}"):
        # The explanation may quote MoneyKit's own message: shown as text, never as Markdown.
        st.error(f"**{plain(trouble.title)}**", icon="⚠️")
        st.markdown(plain(trouble.explanation))
        st.markdown(f"**What to do:** {plain(trouble.what_to_do)}")
        st.caption(plain(f"Reference {reference}" if reference else trouble.kind))
        if st.button("Try again", key=f"trouble-retry-{key}", icon="🔄"):
            st.rerun()


def report(error: Exception, *, where: str, key: str = "page") -> Trouble:
    """Log ``error`` with a reference and draw its designed panel."""
    reference = secrets.token_hex(4)
    logger.exception("%s failed (reference %s)", where, reference)
    trouble = describe(error)
    show_trouble(trouble, reference=reference, key=key)
    return trouble


def run_page(run: Callable[[], None]) -> None:
    """Run a page; an error it raises becomes a designed panel instead of a traceback."""
    st.session_state[_SHOWN_KEY] = set()
    try:
        run()
    except _CONTROL_FLOW:
        raise
    except Exception as error:
        trouble = describe(error)
        if trouble.kind in st.session_state.get(_SHOWN_KEY, set()):
            # A guarded part above already explained it; log the page's failure all the same.
            logger.exception("page failed after %s was reported", trouble.kind)
            return
        report(error, where="page")


@contextmanager
def guard(where: str) -> Iterator[None]:
    """The same for a part of a page that reruns on its own (a fragment)."""
    try:
        yield
    except _CONTROL_FLOW:
        raise
    except Exception as error:
        trouble = report(error, where=where, key=where)
        shown = st.session_state.setdefault(_SHOWN_KEY, set())
        shown.add(trouble.kind)


def guarded(where: str) -> Callable[[Callable[P, R | None]], Callable[P, R | None]]:
    """`guard` as a decorator, for a fragment: put it below `@st.fragment`."""

    def decorate(func: Callable[P, R | None]) -> Callable[P, R | None]:
        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            with guard(where):
                return func(*args, **kwargs)
            return None

        return wrapper

    return decorate
