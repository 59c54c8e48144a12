"""How links and institutions look: labels, colour swatches, institution cards.

Every value drawn here comes from outside (MoneyKit or the customer's bank): colours are already
validated hex by the store's read side and are checked again here before they reach CSS or SVG,
logos must be `data:image/...` or `https:` URLs, and names are HTML-escaped.

Most Streamlit text widgets (alerts, captions, metrics' labels, page links, tabs, expanders,
toasts, tooltips) read their text as Markdown, so a customer id such as
``![x](https://tracker/pixel)`` would load a remote image in the staff member's browser. Any
value from outside (MoneyKit, URL parameters, customers, stored payloads) goes through
:func:`plain` before it is put into such a string.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from urllib.parse import quote

from linkdesk.health import Health
from linkdesk.read.link_rows import LinkRow
from linkdesk.validation import safe_hex_color, safe_logo_url

HEALTH_LABELS: dict[Health, str] = {
    Health.HEALTHY: "✅ Healthy",
    Health.NEEDS_RELINK: "🔴 Needs relink",
    Health.WAIT: "🟡 Wait: retrying",
    Health.STUCK: "🟠 Stuck",
    Health.STALE: "🟤 Stale",
    Health.PENDING: "🔵 Linking",
    Health.ATTENTION: "⚪ Needs attention",
    Health.DELETED: "⚫ Deleted",
}

# What a person would call each MoneyKit error; the code itself is shown beside it.
ERROR_LABELS: dict[str, str] = {
    "auth_expired": "Login expired",
    "invalid_credentials": "Wrong credentials",
    "user_input_incorrect": "Wrong MFA answer",
    "user_oauth_denied": "Consent denied at the bank",
    "user_setup_required": "Action needed at the bank",
    "incomplete": "Link not finished",
    "user_error": "Abandoned in Connect",
    "no_accounts": "No eligible accounts",
    "institution_error": "Bank unavailable",
    "provider_error": "Data provider failed",
    "system_error": "MoneyKit error",
}

NEUTRAL_SWATCH = "#9aa0a6"

# Every ASCII punctuation character may be backslash-escaped in CommonMark, and an escaped one is
# always shown as itself: no link, image, HTML, emphasis, code, heading, list, table, LaTeX
# ($), emoji shortcode or Streamlit directive (:red[...], :material/...:) can start.
_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# Line breaks would start new blocks; other control characters have no business in a label.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


# Streamlit's Markdown also turns bare URLs and e-mail addresses into links after escapes are
# undone ("GFM autolink literals"). An invisible zero-width space before "://", "@" and the dot
# of "www." keeps them text; the value reads the same.
_AUTOLINK_LITERAL = re.compile(r"(?=://)|(?=@)|(?i:(?<=www)(?=\.))")
_ZERO_WIDTH_SPACE = "\u200b"


def plain(value: object) -> str:
    """``value`` as Markdown that shows exactly its characters, on one line, linking nowhere."""
    text = _CONTROL.sub(" ", "" if value is None else str(value))
    text = _AUTOLINK_LITERAL.sub(_ZERO_WIDTH_SPACE, text)
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", text)


def code_span(value: object) -> str:
    """``value`` as an inline Markdown code span (nothing inside a code span is parsed).

    The fence is one backtick longer than any run of backticks in the value, so the value
    cannot close it early.
    """
    text = _CONTROL.sub(" ", "" if value is None else str(value))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


def health_label(health: Health) -> str:
    return HEALTH_LABELS.get(health, str(health))


def error_label(error_code: str | None) -> str:
    if not error_code:
        return ""
    return f"{ERROR_LABELS.get(error_code, 'Error')} ({error_code})"


def institution_colour(row: LinkRow, *, dark: bool) -> str | None:
    preferred = row.institution_color_dark if dark else row.institution_color
    return safe_hex_color(preferred) or safe_hex_color(row.institution_color)


def _first_safe_image(*candidates: str | None) -> str | None:
    for candidate in candidates:
        image = safe_logo_url(candidate)
        if image:
            return image
    return None


def institution_logo(row: LinkRow, *, dark: bool) -> str | None:
    """The wide logo, for cards; the dark variant first when the theme is dark."""
    if dark:
        return _first_safe_image(
            row.institution_logo_dark, row.institution_logo, row.institution_avatar_dark
        )
    return _first_safe_image(row.institution_logo, row.institution_avatar)


def institution_avatar(row: LinkRow, *, dark: bool) -> str | None:
    """The square avatar, for table cells where a wide logo would be squeezed unreadable."""
    if dark:
        return _first_safe_image(
            row.institution_avatar_dark, row.institution_avatar, row.institution_logo_dark
        )
    return _first_safe_image(row.institution_avatar, row.institution_logo)


def swatch_data_uri(colour: str | None) -> str:
    """A small SVG chip in the given colour, for an image column of a dataframe."""
    fill = safe_hex_color(colour) or NEUTRAL_SWATCH
    svg = (
        "<svg xmlns='http://www.w3.org/2000/svg' width='40' height='16'>"
        f"<rect width='40' height='16' rx='4' fill='{fill}'/></svg>"
    )
    return "data:image/svg+xml;charset=utf-8," + quote(svg)


def framed_logo_data_uri(row: LinkRow, *, dark: bool) -> str:
    """The bank's square logo inside a frame of its brand colour, for a table's image column:
    the colour is shown without a column of its own. A logo that is not a ``data:`` image (an
    ``https:`` one would not load inside an SVG drawn as an image) gives way to the bank's
    initial."""
    return _framed_logo(
        institution_avatar(row, dark=dark),
        institution_colour(row, dark=dark),
        (row.institution_name or row.institution_id or "?")[:1].upper(),
    )


@lru_cache(maxsize=512)
def _framed_logo(logo: str | None, colour: str | None, initial: str) -> str:
    # Checked again here: this text becomes SVG markup.
    stroke = safe_hex_color(colour) or NEUTRAL_SWATCH
    image = safe_logo_url(logo)
    if image and image.startswith("data:image/"):
        inner = (
            f"<image href='{html.escape(image, quote=True)}' x='7' y='7' width='26' "
            "height='26' preserveAspectRatio='xMidYMid meet'/>"
        )
    else:
        inner = (
            "<text x='20' y='26' text-anchor='middle' font-family='sans-serif' font-size='16' "
            f"font-weight='600' fill='{stroke}'>{html.escape(initial)}</text>"
        )
    svg = (
        "<svg xmlns='http://www.w3.org/2000/svg' width='40' height='40' viewBox='0 0 40 40'>"
        f"<rect x='2' y='2' width='36' height='36' rx='9' fill='none' stroke='{stroke}' "
        f"stroke-width='4'/>{inner}</svg>"
    )
    return "data:image/svg+xml;charset=utf-8," + quote(svg)


def labelled_value_html(label: str, value: str, *, testid: str) -> str:
    """A small label over a value in metric-like type that wraps rather than being cut short
    (a customer id can be 150 characters). Both are escaped: the value comes from outside."""
    return (
        f'<div data-testid="{html.escape(testid, quote=True)}">'
        f'<div style="font-size:.875rem;opacity:.8;margin-bottom:.25rem">{html.escape(label)}</div>'
        '<div data-role="value" style="font-size:1.5rem;line-height:1.3;overflow-wrap:anywhere">'
        f"{html.escape(value)}</div></div>"
    )


def institution_card_html(row: LinkRow, *, dark: bool) -> str:
    """An institution header: logo, escaped name and a brand-coloured accent bar."""
    colour = institution_colour(row, dark=dark) or NEUTRAL_SWATCH
    logo = institution_logo(row, dark=dark)
    name = html.escape(row.institution_name or row.institution_id)
    logo_html = (
        f'<img src="{html.escape(logo, quote=True)}" alt="" '
        'style="height:48px;max-width:160px;border-radius:8px;flex:none">'
        if logo
        else ""
    )
    return (
        f'<div data-testid="institution-card" data-colour="{colour}" '
        f'style="display:flex;gap:14px;align-items:center;padding:12px 14px;'
        f'border-left:6px solid {colour};border-radius:8px;">'
        f"{logo_html}"
        f'<div><div style="font-size:1.15rem;font-weight:600">{name}</div>'
        f'<div style="opacity:.7;font-size:.85rem">{html.escape(row.institution_id)} · '
        f"brand colour <code>{colour}</code></div></div></div>"
    )
