"""Institution artwork drawn as SVG, so the sandbox needs no image files and no network.

* avatar: a rounded square in the brand colour with the bank's initials (square, 64x64).
* logo: the same mark followed by the bank name as a word mark (wide).
The ``_dark`` variants use the dark-mode brand colour and light lettering, for dark backgrounds.
"""

from __future__ import annotations

from typing import Literal
from xml.sax.saxutils import escape

from sandbox.institutions import Institution

ImageKind = Literal["logo", "logo_dark", "avatar", "avatar_dark"]
IMAGE_KINDS: tuple[ImageKind, ...] = ("logo", "logo_dark", "avatar", "avatar_dark")

_FONT = "-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
_WORDMARK_LIGHT = "#1c1c1e"
_WORDMARK_DARK = "#f2f2f7"
# Rough advance width of one character at the word-mark size; only used to size the canvas.
_CHAR_WIDTH = 11.5


def _relative_luminance(hex_colour: str) -> float:
    value = hex_colour.lstrip("#")
    channels = [int(value[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def ink_for(background: str) -> str:
    """White or near-black lettering, whichever contrasts more with ``background``."""
    lum = _relative_luminance(background)
    contrast_white = 1.05 / (lum + 0.05)
    contrast_black = (lum + 0.05) / 0.05
    return "#ffffff" if contrast_white >= contrast_black else "#111111"


def _mark(inst: Institution, colour: str, x: int, y: int, size: int) -> str:
    radius = round(size * 0.22)
    font_size = round(size * 0.42)
    cx = x + size / 2
    cy = y + size / 2
    return (
        f'<rect x="{x}" y="{y}" width="{size}" height="{size}" rx="{radius}" fill="{colour}"/>'
        f'<text x="{cx:g}" y="{cy:g}" fill="{ink_for(colour)}" font-family="{_FONT}" '
        f'font-size="{font_size}" font-weight="700" text-anchor="middle" '
        f'dominant-baseline="central">{escape(inst.initials)}</text>'
    )


def avatar_svg(inst: Institution, *, dark: bool = False) -> str:
    colour = inst.color_dark if dark else inst.color
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64" '
        f'role="img" aria-label="{escape(inst.name, {chr(34): "&quot;"})}">'
        f"{_mark(inst, colour, 0, 0, 64)}</svg>"
    )


def logo_svg(inst: Institution, *, dark: bool = False) -> str:
    colour = inst.color_dark if dark else inst.color
    wordmark = _WORDMARK_DARK if dark else _WORDMARK_LIGHT
    width = 72 + round(len(inst.name) * _CHAR_WIDTH) + 8
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="64" '
        f'viewBox="0 0 {width} 64" role="img" '
        f'aria-label="{escape(inst.name, {chr(34): "&quot;"})}">'
        f"{_mark(inst, colour, 4, 4, 56)}"
        f'<text x="72" y="32" fill="{wordmark}" font-family="{_FONT}" font-size="20" '
        f'font-weight="600" dominant-baseline="central">{escape(inst.name)}</text></svg>'
    )


def render(inst: Institution, kind: ImageKind) -> str:
    if kind == "logo":
        return logo_svg(inst)
    if kind == "logo_dark":
        return logo_svg(inst, dark=True)
    if kind == "avatar":
        return avatar_svg(inst)
    return avatar_svg(inst, dark=True)
