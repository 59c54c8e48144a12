"""The component's cumulative log: only unapplied, well-formed entries of this session, in order."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkdesk.connect_log import new_entries, parse_entry, terminal_entry


def entry(seq: Any, kind: str = "event", session: str = "s1", **data: Any) -> dict[str, Any]:
    return {
        "session_id": session,
        "seq": seq,
        "type": kind,
        "at": "2025-01-01T12:00:00.123Z",
        "data": data or {"name": "open", "properties": {}},
    }


def seqs(entries) -> list[int]:
    return [e.seq for e in entries]


@pytest.mark.parametrize(
    ("log", "applied", "expected", "gaps"),
    [
        pytest.param([], [], [], (), id="empty"),
        pytest.param([entry(1), entry(2), entry(3)], [], [1, 2, 3], (), id="fresh"),
        pytest.param([entry(1), entry(2), entry(3)], [1, 2], [3], (), id="rerun-applies-only-new"),
        pytest.param([entry(1), entry(2)], [1, 2], [], (), id="rerun-nothing-new"),
        pytest.param([entry(3), entry(1), entry(2)], [], [1, 2, 3], (), id="out-of-order"),
        pytest.param([entry(1), entry(1), entry(2), entry(2)], [], [1, 2], (), id="duplicates"),
        pytest.param([entry(1), entry(4)], [], [1, 4], (2, 3), id="gap-reported"),
        pytest.param([entry(5)], [1, 2, 3], [5], (4,), id="gap-after-applied"),
        pytest.param(
            [entry(1), entry(2, session="other"), entry(3)], [], [1, 3], (2,), id="other-session"
        ),
        pytest.param(
            [
                entry(1),
                "junk",
                None,
                42,
                {"seq": 2},
                entry(0),
                entry(-1),
                entry("2"),
                entry(True),
                entry(2, kind="bogus"),
                {**entry(2), "data": "not a dict"},
                entry(3),
            ],
            [],
            [1, 3],
            (2,),
            id="malformed-dropped",
        ),
    ],
)
def test_new_entries_table(log, applied, expected, gaps):
    result = new_entries(log, applied, session_id="s1")
    assert seqs(result) == expected
    assert result.gaps == gaps
    assert isinstance(result, list)


def test_malformed_and_foreign_are_counted():
    log = [entry(1), "junk", {"seq": 2}, entry(2, session="s2")]
    result = new_entries(log, [], session_id="s1")
    assert (result.malformed, result.foreign) == (2, 1)


def test_without_session_id_the_first_valid_entry_decides():
    result = new_entries(["junk", entry(1, session="a"), entry(2, session="b")], [])
    assert [(e.session_id, e.seq) for e in result] == [("a", 1)]


SUCCESS: dict[str, Any] = {"exchangeable_token": "t", "institution": {"id": "b"}, "link_id": "l"}


def test_first_occurrence_of_a_duplicate_wins():
    log = [entry(1, kind="exit", error=None), entry(1, kind="success", **SUCCESS)]
    (only,) = new_entries(log, [], session_id="s1")
    assert only.type == "exit"


def test_none_log_is_empty():
    assert new_entries(None, [1]) == []


def test_parse_entry_fields():
    raw = entry(7, "success", **SUCCESS)
    parsed = parse_entry(raw)
    assert parsed is not None
    assert parsed.seq == 7 and parsed.type == "success" and parsed.is_terminal
    assert parsed.at.tzinfo is not None and parsed.at.microsecond == 123000
    assert parsed.to_dict() == raw  # the component's JSON shape, unchanged
    assert parse_entry(entry(1)).event_name == "open"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "raw",
    [
        {**entry(1), "at": "yesterday"},
        {**entry(1), "data": None},
        entry(1, "success", exchangeable_token="x", link_id="l"),  # no institution
        entry(1, "success", exchangeable_token="", institution={}, link_id="l"),
        entry(1, "exit", reason="no error key"),
        entry(1, "event", name=float("inf")),
    ],
    ids=["bad-at", "no-data", "success-no-institution", "empty-token", "exit-no-error", "not-json"],
)
def test_one_parser_drops_what_the_component_contract_does_not_allow(raw):
    assert parse_entry(raw) is None
    assert new_entries([raw], []).malformed == 1


def test_typed_entries_pass_through_unparsed():
    typed = parse_entry(entry(2))
    assert typed is not None
    result = new_entries([typed, entry(1)], [], session_id="s1")
    assert seqs(result) == [1, 2] and result[1] is typed


def test_terminal_entry_is_the_first_end_by_seq():
    parsed = new_entries(
        [entry(1), entry(4, "exit", error=None), entry(3, "success", **SUCCESS)], []
    )
    end = terminal_entry(parsed)
    assert end is not None and end.seq == 3
    assert terminal_entry(new_entries([entry(1)], [])) is None


def test_hostile_sequence_numbers_stay_cheap():
    result = new_entries([entry(1), entry(10**15)], [], session_id="s1")
    assert seqs(result) == [1, 10**15]
    assert len(result.gaps) <= 1000


@given(
    st.lists(st.integers(min_value=1, max_value=30), max_size=40),
    st.sets(st.integers(min_value=1, max_value=30), max_size=10),
)
def test_properties(raw_seqs, applied):
    log = [entry(s) for s in raw_seqs]
    result = new_entries(log, applied, session_id="s1")
    got = seqs(result)
    assert got == sorted(set(raw_seqs) - applied)  # every new seq once, in order
    known = set(got) | applied
    assert set(result.gaps) == set(range(1, max(known, default=0) + 1)) - known
    # Applying the result and reading the same log again gives nothing new (a rerun).
    assert new_entries(log, applied | set(got), session_id="s1") == []
