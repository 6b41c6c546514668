"""Offline token counting. The domain only sees the `TokenCounter` protocol; the default is a
deterministic word-level estimate (every word and every punctuation mark is one token), which tracks
BPE counts of English prose closely enough for budgets. A model's own tokenizer plugs in through
`app.tokens.make_token_counter`."""

from __future__ import annotations

import re
from typing import Protocol

_PIECE = re.compile(r"\w+|[^\w\s]")


class TokenCounter(Protocol):
    name: str

    def __hash__(self) -> int: ...  # counts of fixed prompt text are cached per counter

    def count(self, text: str) -> int: ...

    def prefix_end(self, text: str, max_tokens: int) -> int:
        """Character offset where the first `max_tokens` tokens of `text` end."""
        ...


class WordTokenCounter:
    name = "word-estimate"

    def count(self, text: str) -> int:
        return len(_PIECE.findall(text))  # half the time of counting `finditer`'s matches

    def prefix_end(self, text: str, max_tokens: int) -> int:
        if max_tokens <= 0:
            return 0
        for index, match in enumerate(_PIECE.finditer(text), start=1):
            if index == max_tokens:
                return match.end()
        return len(text)


def truncate_at_word(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """The longest prefix of `text` within `max_tokens` that ends at a word boundary."""
    if counter.count(text) <= max_tokens:
        return text
    end = counter.prefix_end(text, max_tokens)
    cut = text[:end]
    if end < len(text) and not text[end].isspace():
        space = cut.rfind(" ")
        if space > 0:
            cut = cut[:space]
    return cut.rstrip()
