"""The retrieval tokenizer of SPEC §4: lower-cased `\\b\\w+\\b` words, no stemming, no stopwords."""

from __future__ import annotations

import re

_WORD = re.compile(r"\b\w+\b")


def bm25_tokens(text: str) -> list[str]:
    # Lower-case first, then match: the order upstream used (it differs for a few non-ASCII letters).
    return _WORD.findall(text.lower())
