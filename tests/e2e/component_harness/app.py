"""Streamlit app that mounts the Connect component for the delivery e2e test.

It consumes the log the way the dashboard does: each (session_id, seq) is applied once.
After every run it writes what it has applied, and what the component returned, to the
JSON file named by ``HARNESS_OUTPUT`` so the test can compare it with what was sent.

Environment: ``HARNESS_OUTPUT`` (file to write), ``HARNESS_CONNECT_HOST`` (origin of the
stub Connect UI), ``HARNESS_SESSION_ID`` and ``HARNESS_LINK_SESSION_TOKEN``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import streamlit as st

from components.moneykit_connect import moneykit_connect

OUTPUT = Path(os.environ["HARNESS_OUTPUT"])
CONNECT_HOST = os.environ["HARNESS_CONNECT_HOST"]
SESSION_ID = os.environ.get("HARNESS_SESSION_ID", "cs_e2e_delivery")
TOKEN = os.environ.get("HARNESS_LINK_SESSION_TOKEN", "lst_e2e_delivery")

state = st.session_state
state.setdefault("runs", 0)
state.setdefault("applied", {})  # "session_id:seq" -> the entry as first applied
state.setdefault("received", [])  # applied entries, in the order they were applied
state.setdefault("conflicts", [])  # a seq seen again with different content
state.runs += 1

st.title("Connect delivery harness")
if st.button("Rerun"):
    st.rerun()
shown = st.checkbox("Show Connect", value=True)

log: list[dict[str, Any]] = []
if shown:
    entries = moneykit_connect(
        mode="link",
        session_id=SESSION_ID,
        connect_host=CONNECT_HOST,
        key="connect",
        link_session_token=TOKEN,
    )
    log = [entry.to_dict() for entry in entries]

for entry in log:
    ident = f"{entry['session_id']}:{entry['seq']}"
    first = state.applied.get(ident)
    if first is None:
        state.applied[ident] = entry
        state.received.append(entry)
    elif first != entry:
        state.conflicts.append(ident)

st.write(f"Applied {len(state.received)} entries over {state.runs} runs.")

report = {
    "runs": state.runs,
    "shown": shown,
    "received": state.received,
    "conflicts": state.conflicts,
    "last_log": log,
}
partial = OUTPUT.with_suffix(".tmp")
partial.write_text(json.dumps(report), encoding="utf-8")
partial.replace(OUTPUT)
