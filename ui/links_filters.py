"""The Links page's filters and sort: widgets that mirror the URL's query parameters (a filtered
view can be shared by URL), and the paging that restarts when either changes."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from linkdesk.health import Health
from linkdesk.read.link_order import LinkSort
from linkdesk.read.links import LinkFilters
from ui.render import ERROR_LABELS, error_label, health_label

# Filter widgets mirror these query parameters.
FILTER_PARAMS = ("health", "error", "institution", "customer", "q")
CURSORS_KEY = "links.cursors"
SORT_LABELS = {
    LinkSort.UPDATED_DESC: "Recently changed first",
    LinkSort.UPDATED_ASC: "Oldest change first",
    LinkSort.LINK_ID: "Link id",
    LinkSort.INSTITUTION: "Bank name",
    LinkSort.CUSTOMER: "Customer id",
    LinkSort.STATE: "State and error",
}


def init_filters_from_url() -> None:
    for name in FILTER_PARAMS:
        key = f"links.filter.{name}"
        if key not in st.session_state:
            st.session_state[key] = st.query_params.get(name) or None
    st.session_state.setdefault(CURSORS_KEY, [None])


def sync_filters_to_url() -> None:
    for name in FILTER_PARAMS:
        value = st.session_state.get(f"links.filter.{name}")
        if value:
            st.query_params[name] = value
        elif name in st.query_params:
            del st.query_params[name]
    st.session_state[CURSORS_KEY] = [None]


def filters_in_url() -> dict[str, str]:
    """The filters of the view as query parameters, for a link to another page about it."""
    return {name: st.query_params[name] for name in FILTER_PARAMS if name in st.query_params}


def page_cursors() -> list[str | None]:
    """The cursors of the pages walked so far: the last one reads the page shown."""
    cursors: list[str | None] = st.session_state[CURSORS_KEY]
    return cursors


def next_page(cursor: str | None) -> None:
    # A callback runs before the script, so one click costs one run of the page (a button
    # followed by st.rerun() would run it twice).
    st.session_state[CURSORS_KEY].append(cursor)


def restart_paging() -> None:
    # A cursor belongs to one sort order; a new order starts again at the first page.
    st.session_state[CURSORS_KEY] = [None]


def show_auth_expired() -> None:
    st.session_state["links.filter.error"] = "auth_expired"
    st.session_state["links.filter.health"] = None
    sync_filters_to_url()


def filter_widgets(institutions: Mapping[str, str]) -> tuple[LinkFilters, LinkSort]:
    """One row of filters and the sort; returns the view they choose."""
    row = st.columns([1.1, 1.1, 1.2, 0.9, 1, 1.5])
    row[0].selectbox(
        "Health",
        [None, *Health],
        format_func=lambda value: "All" if value is None else health_label(Health(value)),
        key="links.filter.health",
        placeholder="All",
        on_change=sync_filters_to_url,
    )
    row[1].selectbox(
        "Error",
        [None, *ERROR_LABELS],
        format_func=lambda value: "Any" if value is None else error_label(value),
        key="links.filter.error",
        placeholder="Any",
        on_change=sync_filters_to_url,
    )
    row[2].selectbox(
        "Institution",
        [None, *sorted(institutions, key=lambda key: institutions[key].lower())],
        format_func=lambda value: "All" if value is None else institutions.get(value, value),
        key="links.filter.institution",
        placeholder="All",
        on_change=sync_filters_to_url,
    )
    row[3].text_input(
        "Customer",
        key="links.filter.customer",
        placeholder="id starts with…",
        on_change=sync_filters_to_url,
    )
    row[4].text_input(
        "Search",
        key="links.filter.q",
        placeholder="link id or bank name",
        on_change=sync_filters_to_url,
    )
    state = st.session_state
    health_value = state.get("links.filter.health")
    filters = LinkFilters(
        health=Health(health_value) if health_value else None,
        error_code=state.get("links.filter.error"),
        institution_id=state.get("links.filter.institution"),
        customer=(state.get("links.filter.customer") or "").strip() or None,
        search=(state.get("links.filter.q") or "").strip() or None,
    )
    sort = LinkSort(
        row[5].selectbox(
            "Sort by",
            list(LinkSort),
            format_func=lambda value: SORT_LABELS[LinkSort(value)],
            key="links.sort",
            on_change=restart_paging,
        )
        or LinkSort.UPDATED_DESC
    )
    return filters, sort
