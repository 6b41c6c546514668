"""Words as search sees them: SPEC §4's tokenizer, and the cues (`Item.cues`) a writer derives with it."""

from __future__ import annotations

import re

from app.memory.stemming import stem
from app.memory.stopwords import STOPWORDS

_WORD = re.compile(r"\b\w+\b")


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased `\\b\\w+\\b` words, no stemming, no stopwords (the paper's scorer, kept bit-identical
    to rank-bm25)."""
    # Lower-case first, then match: the order upstream used (it differs for a few non-ASCII letters).
    return _WORD.findall(text.lower())


def cues_for(question: str, content: str) -> str:
    """The content words of `question` that `content` lacks, once each, in the question's order: an
    item's index-only cues. Words are compared as the service's retrieval analyzer indexes them
    (`bm25_tokens`, then the light stemmer), so a cue never repeats a term the content already
    indexes; stopwords are left out (they match everything)."""
    held = {stem(word) for word in bm25_tokens(content)}
    cues: dict[str, None] = {}
    for word in bm25_tokens(question):
        term = stem(word)
        if word not in STOPWORDS and term not in held:
            held.add(term)
            cues[word] = None
    return " ".join(cues)
