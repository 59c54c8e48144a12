"""Send the whole browser tab to a same-origin path, under the dashboard's security policy.

The Content-Security-Policy (``linkdesk/http_security.py``) refuses inline scripts, so an
``st.html`` ``<script>`` never runs. A Components v2 component's JavaScript is loaded from a
``blob:`` URL the policy allows, so the move goes through this small one.
"""

from __future__ import annotations

import streamlit as st

__all__ = ["go_to"]

_JS = """// Moves the tab to data.url: a path on this site that the dashboard built, never input.
export default function ({ data }) {
  const url = data && data.url;
  if (typeof url === "string" && url.startsWith("/") && !url.startsWith("//")) {
    window.location.replace(url);
  }
}
"""

_mount = st.components.v2.component("linkdesk_navigate", js=_JS)


def go_to(url: str) -> None:
    """Replace the tab's page with ``url``, a path on this site (``/auth/session?…``)."""
    if not url.startswith("/") or url.startswith("//") or "\\" in url:
        raise ValueError(f"not a path on this site: {url!r}")
    _mount(data={"url": url}, key="linkdesk.navigate")
