"""Retrieval tokenizers.

- `bm25_tokens`: SPEC §4's tokenizer, lower-cased `\\b\\w+\\b` words, no stemming, no stopwords (the
  paper's scorer, kept bit-identical to rank-bm25);
- `Analyzer`: what a scorer does to item text (`index_terms`) and to a question (`query_terms`). The
  service default stems words lightly (Snowball English, so "plays"/"playing" meet "play") and drops stopwords
  from the query, so "the" no longer makes an unrelated item match; and it lets a question word meet a
  longer word that ends in it (`compound_of`: "boat" meets "sailboat", "ball" meets "basketball").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.memory.stemming import stem
from app.memory.stopwords import STOPWORDS
from app.memory.words import bm25_tokens

# A compound's last part is its head ("a sailboat is a boat"): a query word of at least this many
# letters meets a longer word that ends in it after at least `COMPOUND_MIN_HEAD` letters. Short parts
# and short heads would pair unrelated words ("ring" / "during", "rain" / "train").
COMPOUND_MIN_PART = 4
COMPOUND_MIN_HEAD = 3


def compound_of(word: str, part: str) -> bool:
    """`word` is a compound whose last part is `part` ("sailboat", "boat")."""
    return (
        len(part) >= COMPOUND_MIN_PART and len(word) - len(part) >= COMPOUND_MIN_HEAD and word.endswith(part)
    )


def compound_parts(word: str) -> Iterator[str]:
    """Every `part` with `compound_of(word, part)`: the suffixes of `word` long enough to be a part
    and short enough to leave a head (none for words under 7 letters)."""
    for length in range(COMPOUND_MIN_PART, len(word) - COMPOUND_MIN_HEAD + 1):
        yield word[-length:]


@dataclass(frozen=True)
class Analyzer:
    stemming: bool
    query_stopwords: bool
    compounds: bool = False  # a query word also matches compounds that end in it (`compound_of`)

    def index_terms(self, text: str) -> list[str]:
        words = bm25_tokens(text)
        return [stem(word) for word in words] if self.stemming else words

    def query_terms(self, text: str) -> list[str]:
        words = bm25_tokens(text)
        if self.query_stopwords:
            kept = [word for word in words if word not in STOPWORDS]
            # A question made only of stopwords ("Who is he?") keeps them: nothing else can match.
            words = kept or words
        return [stem(word) for word in words] if self.stemming else words


PLAIN = Analyzer(stemming=False, query_stopwords=False)  # SPEC §4
STEMMED = Analyzer(stemming=True, query_stopwords=True, compounds=True)
