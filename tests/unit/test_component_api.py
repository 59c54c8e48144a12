"""The Connect component's Python boundary: argument checks and log sanitising."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from streamlit.components.v2.component_definition_resolver import (
    build_definition_with_validation,
)
from streamlit.components.v2.component_path_utils import ComponentPathUtils
from streamlit.components.v2.get_bidi_component_manager import get_bidi_component_manager

from components.moneykit_connect import (
    BUNDLE_PATH,
    COMPONENT_NAME,
    ComponentNotBuiltError,
    load_bundle,
)
from components.moneykit_connect.contract import (
    sanitize_log,
    validate_connect_host,
    validate_launch,
)

SESSION = "cs_0001"


# --------------------------------------------------------------------------- connect_host

BARE_ORIGINS = [
    "http://localhost:8611",
    "https://connect.moneykit.com",
    "http://127.0.0.1:8611",
    "http://localhost",
    "https://localhost:8443",
    "http://[::1]:8611",
    "http://sandbox-1.internal:65535",
]


@pytest.mark.parametrize("host", BARE_ORIGINS)
def test_bare_origins_are_accepted_unchanged(host: str) -> None:
    assert validate_connect_host(host) == host


NOT_BARE = [
    ("http://localhost:8611/", "trailing slash"),
    ("http://localhost:8611/connect", "path"),
    ("http://localhost:8611?x=1", "query"),
    ("http://localhost:8611#frag", "fragment"),
    ("http://localhost:8611?", "empty query"),
    ("http://user:pw@localhost:8611", "credentials"),
    ("localhost:8611", "no scheme"),
    ("//localhost:8611", "scheme-relative"),
    ("", "empty"),
    ("ftp://localhost:8611", "other scheme"),
    ("HTTP://localhost:8611", "uppercase scheme"),
    ("http://LocalHost:8611", "uppercase host"),
    ("http://localhost:80", "default http port"),
    ("https://connect.moneykit.com:443", "default https port"),
    ("http://localhost:08611", "port with leading zero"),
    ("http://localhost:0", "port zero"),
    ("http://localhost:70000", "port out of range"),
    ("http://localhost:", "empty port"),
    (" http://localhost:8611", "leading space"),
    ("http://localhost:8611 ", "trailing space"),
    ("http://localhost.:8611", "trailing dot"),
    ("http://local..host:8611", "empty label"),
    ("http://127.1:8611", "short IPv4 the browser expands"),
    ("http://0x7f.0.0.1:8611", "hex IPv4"),
    ("http://127.000.0.1:8611", "IPv4 with leading zeros"),
    ("http://256.0.0.1:8611", "IPv4 octet out of range"),
    ("http://[0:0:0:0:0:0:0:1]:8611", "uncompressed IPv6"),
    ("http://[zz::1]:8611", "invalid IPv6"),
    ("http://bank_host:8611", "underscore in host"),
    ("http://bänk.example", "non-ASCII host"),
]


@pytest.mark.parametrize(("host", "why"), NOT_BARE, ids=[why for _, why in NOT_BARE])
def test_anything_but_a_bare_origin_is_rejected(host: str, why: str) -> None:
    with pytest.raises(ValueError, match=r"not a bare origin|must be a string"):
        validate_connect_host(host)


def test_rejection_explains_the_expected_form() -> None:
    with pytest.raises(ValueError) as caught:
        validate_connect_host("http://localhost:8611/")
    message = str(caught.value)
    assert "'http://localhost:8611/'" in message
    assert "scheme://host[:port]" in message


def test_non_string_host_is_rejected() -> None:
    with pytest.raises(ValueError):
        validate_connect_host(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ mode and args

HOST = "http://localhost:8611"


def launch(**overrides: Any) -> Any:
    args: dict[str, Any] = {
        "mode": "link",
        "session_id": SESSION,
        "connect_host": HOST,
        "link_session_token": "lst_secret_value",
    }
    args.update(overrides)
    return validate_launch(**args)


def test_link_and_relink_take_a_token() -> None:
    assert launch().to_component_data() == {
        "mode": "link",
        "session_id": SESSION,
        "connect_host": HOST,
        "link_session_token": "lst_secret_value",
        "redirect_url": None,
        "color_scheme": "light",
    }
    assert launch(mode="relink", color_scheme="dark").color_scheme == "dark"


def test_continue_takes_the_return_url_and_no_token() -> None:
    url = "http://localhost:8501/oauth_return?code=1&state=x"
    args = launch(mode="continue", link_session_token=None, redirect_url=url)
    assert args.to_component_data()["redirect_url"] == url
    assert args.to_component_data()["link_session_token"] is None


BAD_ARGS = [
    ({"mode": "open"}, "mode must be one of"),
    ({"mode": "link", "link_session_token": None}, "needs link_session_token"),
    ({"mode": "relink", "link_session_token": ""}, "needs link_session_token"),
    ({"mode": "link", "link_session_token": "lst with space"}, "needs link_session_token"),
    ({"mode": "link", "redirect_url": "http://localhost:8501/x"}, "only used with mode"),
    ({"mode": "continue", "link_session_token": None}, "needs redirect_url"),
    (
        {"mode": "continue", "link_session_token": None, "redirect_url": "/oauth_return"},
        "absolute http",
    ),
    (
        {"mode": "continue", "link_session_token": None, "redirect_url": "javascript:alert(1)"},
        "absolute http",
    ),
    (
        {"mode": "continue", "redirect_url": "http://localhost:8501/oauth_return"},
        "takes no link_session_token",
    ),
    ({"session_id": ""}, "session_id"),
    ({"session_id": "two words"}, "session_id"),
    ({"session_id": "x" * 201}, "at most 200"),
    ({"color_scheme": "auto"}, "color_scheme"),
    ({"connect_host": "http://localhost:8611/"}, "bare origin"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_ARGS)
def test_arguments_that_do_not_fit_the_mode_are_rejected(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        launch(**overrides)


def test_the_token_never_appears_in_errors_or_repr() -> None:
    with pytest.raises(ValueError) as caught:
        launch(redirect_url="http://localhost:8501/x")
    assert "lst_secret_value" not in str(caught.value)
    assert "lst_secret_value" not in repr(launch())


# -------------------------------------------------------------------------- log sanitising

INSTITUTION = {"id": "moneykit-creds-bank", "name": "Credentials Bank", "selectedAccounts": []}


def entry(seq: Any, entry_type: str = "event", data: Any = None, **overrides: Any) -> dict:
    if data is None:
        data = {
            "event": {"name": "change_screen", "properties": {"current_screen_name": "Finder"}},
            "success": {"exchangeable_token": "ext_1", "institution": INSTITUTION, "link_id": "l1"},
            "relink_success": {"institution": INSTITUTION, "link_id": "l1"},
            "exit": {"error": None},
        }[entry_type]
    raw = {
        "session_id": SESSION,
        "seq": seq,
        "type": entry_type,
        "at": "2025-03-04T05:06:07.890Z",
        "data": data,
    }
    raw.update(overrides)
    return raw


def test_a_well_formed_log_comes_back_whole_and_in_order() -> None:
    raw = [entry(1), entry(2), entry(3, "success")]
    assert sanitize_log(raw, session_id=SESSION) == raw


def test_every_entry_type_is_accepted() -> None:
    error = {"error_id": "invalid_credentials", "displayed_message": "Wrong", "request_id": None}
    raw = [
        entry(1, "relink_success"),
        entry(2, "exit", {"error": error}),
        entry(3, "exit", {"error": {**error, "request_id": "req_1"}}),
        entry(4, "exit"),
    ]
    assert [e["seq"] for e in sanitize_log(raw, session_id=SESSION)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "state",
    [None, {}, "log", 42, {"log": []}, b"[]"],
    ids=["none", "dict", "str", "int", "nested", "bytes"],
)
def test_a_state_that_is_not_a_list_gives_an_empty_log(state: Any) -> None:
    assert sanitize_log(state, session_id=SESSION) == []


MALFORMED = [
    ("not a dict", "entry"),
    (None, "none"),
    (entry(1, session_id="cs_other"), "other session"),
    (entry(1, session_id=None), "no session"),
    (entry(0), "seq zero"),
    (entry(-1), "negative seq"),
    (entry(True), "bool seq"),
    (entry(1.0), "float seq"),
    (entry("1"), "string seq"),
    (entry(1, type="connect.started"), "unknown type"),
    (entry(1, at="yesterday"), "bad timestamp"),
    (entry(1, at="2025-03-04T05:06:07Z"), "timestamp without ms"),
    (entry(1, at="2025-13-04T05:06:07.890Z"), "impossible date"),
    (entry(1, at=None), "no timestamp"),
    (entry(1, "event", ["open"]), "event data not an object"),
    (entry(1, "event", {"name": float("nan")}), "event data not JSON"),
    (entry(1, "success", {"exchangeable_token": "", "institution": {}, "link_id": ""}), "no tok"),
    (entry(1, "success", {"exchangeable_token": 5, "institution": {}, "link_id": ""}), "int tok"),
    (entry(1, "success", {"exchangeable_token": "t", "institution": None, "link_id": ""}), "inst"),
    (entry(1, "success", {"exchangeable_token": "t", "institution": {}}), "no link_id"),
    (entry(1, "relink_success", {"institution": "bank", "link_id": "l1"}), "relink inst"),
    (entry(1, "exit", {}), "exit without error key"),
    (entry(1, "exit", {"error": "failed"}), "exit error a string"),
    (entry(1, "exit", {"error": {"error_id": "x"}}), "exit error incomplete"),
    (
        entry(1, "exit", {"error": {"error_id": "x", "displayed_message": "m", "request_id": 3}}),
        "int rid",
    ),
]


@pytest.mark.parametrize(("bad", "why"), MALFORMED, ids=[why for _, why in MALFORMED])
def test_a_malformed_entry_is_dropped_without_hiding_the_others(bad: Any, why: str) -> None:
    raw = [entry(1), bad, entry(3, "success")]
    assert [e["seq"] for e in sanitize_log(raw, session_id=SESSION)] == [1, 3]


def test_entries_are_ordered_by_seq_and_a_repeated_seq_counts_once() -> None:
    first = entry(2, data={"name": "first"})
    raw = [entry(3), first, entry(1), entry(2, data={"name": "second"})]
    log = sanitize_log(raw, session_id=SESSION)
    assert [e["seq"] for e in log] == [1, 2, 3]
    assert log[1]["data"] == {"name": "first"}


def test_unknown_keys_are_not_passed_on() -> None:
    (clean,) = sanitize_log([entry(1, extra="x")], session_id=SESSION)
    assert set(clean) == {"session_id", "seq", "type", "at", "data"}


def test_the_returned_log_is_a_copy_of_the_state() -> None:
    raw = [entry(1)]
    kept = copy.deepcopy(raw)
    sanitize_log(raw, session_id=SESSION)[0]["data"]["name"] = "changed"
    assert raw == kept


# ----------------------------------------------------------------------------- the bundle


def test_a_missing_bundle_says_to_run_make_setup(tmp_path: Path) -> None:
    with pytest.raises(ComponentNotBuiltError, match="make setup"):
        load_bundle(tmp_path / "dist" / "index.js")


def test_a_one_line_bundle_is_refused(tmp_path: Path) -> None:
    # Streamlit would take a one-line js string containing "/" for a file path.
    bundle = tmp_path / "index.js"
    bundle.write_text('import a from"./a.js";export default a;', encoding="utf-8")
    with pytest.raises(ComponentNotBuiltError):
        load_bundle(bundle)


def test_the_built_bundle_is_taken_as_inline_code() -> None:
    bundle = BUNDLE_PATH.read_text(encoding="utf-8")
    assert ComponentPathUtils.looks_like_inline_content(bundle)
    definition = build_definition_with_validation(
        manager=get_bidi_component_manager(),
        component_key=COMPONENT_NAME,
        html=None,
        css=None,
        js=bundle,
    )
    assert definition.js_content == bundle
    assert definition.js_url is None
