"""Light stemming shared by the extractive writer (near-duplicate facts) and the service's BM25 scorer
("plays"/"playing" meet "play"): Snowball's English stemmer (Porter2), a small pure-Python library, so the
service needs no NLP toolkit at run time."""

from __future__ import annotations

from functools import lru_cache

import snowballstemmer

_ENGLISH = snowballstemmer.stemmer("english")


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    return str(_ENGLISH.stemWord(word))
