"""The pages' one cursor codec: what it writes it reads back; anything else is refused."""

from __future__ import annotations

import pytest

from linkdesk.read.link_order import LinkSort
from linkdesk.read.links import LinkFilters, LinkQueries
from linkdesk.store.cursor import InvalidCursor, decode_cursor, encode_cursor
from linkdesk.store.engine import Store


@pytest.mark.parametrize(
    "value", [["2026-12-03T10:00:00+00:00", "relink", "42"], {"s": "updated_desc", "k": ["é"]}]
)
def test_a_cursor_reads_back_as_written_and_is_url_safe(value: object) -> None:
    cursor = encode_cursor(value)
    assert decode_cursor(cursor) == value
    assert all(ch.isalnum() or ch in "-_" for ch in cursor)


@pytest.mark.parametrize("cursor", ["%%%", "a", encode_cursor("x")[:-2] + "!!", "bm90IGpzb24"])
def test_an_unreadable_cursor_is_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)


def test_a_links_cursor_with_a_bad_time_is_refused(store: Store) -> None:
    forged = encode_cursor({"s": LinkSort.UPDATED_DESC.value, "k": ["yesterday", "mk_1"]})
    with pytest.raises(InvalidCursor):
        LinkQueries(store).list_links(LinkFilters(), sort=LinkSort.UPDATED_DESC, after=forged)
