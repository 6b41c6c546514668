"""Text with nothing visible in it: whitespace, control and format characters (zero-width space,
joiners, word joiner, BOM, bidi marks) and the blank "filler" letters. Such text is empty to a reader and
to the policy, so the service treats it as empty."""

from __future__ import annotations

import unicodedata

_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp"}
# Letters that render as nothing (Hangul fillers, the braille blank).
_BLANK_LETTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


def is_blank(text: str) -> bool:
    return all(
        ch.isspace() or ch in _BLANK_LETTERS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES
        for ch in text
    )
