"""Streamlit app that runs our Connect component against the sandbox for the bank-flow e2e test.

One page, steered by its query string:

* ``?mode=link&sid=<id>&token=<link session token>`` (or ``mode=relink``) opens Connect;
* any URL carrying ``state`` is the OAuth return page: the bank redirected here, so the page runs
  the component in ``continue`` mode with the full URL, in the top-level document.

After every run the app writes what ``moneykit_connect`` returned to
``$HARNESS_OUTPUT_DIR/<session id>.json``, so the test sees exactly what Python received.
Environment: ``HARNESS_OUTPUT_DIR``, ``HARNESS_CONNECT_HOST`` (the sandbox origin) and
``HARNESS_URL`` (this app's own origin, to rebuild the return URL: ``st.context.url`` drops
the query string).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from components.moneykit_connect import moneykit_connect

OUTPUT_DIR = Path(os.environ["HARNESS_OUTPUT_DIR"])
CONNECT_HOST = os.environ["HARNESS_CONNECT_HOST"]
HARNESS_URL = os.environ["HARNESS_URL"].rstrip("/")

params = {key: st.query_params[key] for key in st.query_params}
st.title("Bank flow harness")

log: list[dict[str, Any]]
if "state" in params:
    session_id = f"continue-{params['state'][:16]}"
    mode = "continue"
    entries = moneykit_connect(
        mode="continue",
        session_id=session_id,
        connect_host=CONNECT_HOST,
        key="connect",
        redirect_url=f"{HARNESS_URL}/?{urlencode(params)}",
    )
    log = [entry.to_dict() for entry in entries]
elif params.get("mode") in ("link", "relink"):
    session_id = params["sid"]
    mode = params["mode"]
    entries = moneykit_connect(
        mode="link" if mode == "link" else "relink",
        session_id=session_id,
        connect_host=CONNECT_HOST,
        key="connect",
        link_session_token=params["token"],
    )
    log = [entry.to_dict() for entry in entries]
else:
    st.write("Nothing to do.")
    st.stop()

st.write(f"{mode}: {len(log)} entries")
partial = OUTPUT_DIR / f"{session_id}.tmp"
partial.write_text(json.dumps({"mode": mode, "session_id": session_id, "log": log}), "utf-8")
partial.replace(OUTPUT_DIR / f"{session_id}.json")
