"""`ui.render.plain` and `code_span`: outside text put into Markdown stays that text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ui.render import code_span, plain

ZWSP = "\u200b"
ASCII_PUNCTUATION = r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"""


def unescape(markdown: str) -> str:
    """What CommonMark shows for text made only of escapes and plain characters."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(ZWSP, "")


HOSTILE = [
    "![x](http://127.0.0.1:9/pixel)",
    "[support](https://evil.example/login)",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "<http://127.0.0.1:9/auto>",
    "http://127.0.0.1:9/bare",
    "www.evil.example",
    "phish@evil.example",
    "**bold** _em_ ~~strike~~",
    "# heading",
    "- list item",
    "> quote",
    "| a | b |",
    ":red[coloured] :material/warning:",
    "$\\LaTeX$",
    "&lt;img&gt; &#60;",
    "`code` ``more``",
    "line one\nline two\r\n\u2028three",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_every_markdown_trick_is_escaped(value: str) -> None:
    text = plain(value)
    # No unescaped punctuation is left for Markdown to act on.
    without_escapes = re.sub(r"\\[!-/:-@\[-`{-~]", "", text)
    assert re.search(r"[!-/:-@\[-`{-~]", without_escapes) is None
    assert "\n" not in text and "\r" not in text and "\u2028" not in text
    assert unescape(text) == re.sub(r"[\n\r\u2028]+", " ", value)


@pytest.mark.parametrize("value", ["http://x", "https://x", "www.x", "a@b.c", "WWW.X"])
def test_autolink_literals_are_broken_by_an_invisible_space(value: str) -> None:
    text = plain(value)
    assert ZWSP in text
    assert unescape(text) == value


@given(st.text())
def test_plain_shows_exactly_the_characters(value: str) -> None:
    expected = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]+", " ", value)
    assert unescape(plain(value)) == expected


@given(st.text())
def test_a_code_span_cannot_be_closed_early(value: str) -> None:
    span = code_span(value)
    fence = re.match(r"`+", span)
    assert fence is not None
    inner = span[len(fence.group()) : -len(fence.group())]
    assert fence.group() not in inner
    assert "\n" not in span


def test_none_is_empty() -> None:
    assert plain(None) == ""
