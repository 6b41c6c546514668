"""BM25 over sparse postings: with the Okapi idf (the default), score-for-score identical to rank-bm25's
`BM25Okapi`; with the Lucene idf, never negative.

rank-bm25 (the reference of SPEC §4) loops over every document for every query word. Here each word
keeps a postings list (document positions and term frequencies) and a query touches only the
documents that contain its words. The arithmetic is the reference's, operation for operation, so the
scores are bitwise equal (a document without the word gets `+0.0` from the reference, which changes
nothing):

- idf(w) = ln(N − df + 0.5) − ln(df + 0.5); a negative idf is replaced by `epsilon · mean idf`, the mean
  taken over the whole vocabulary in the reference's order (first occurrence in the corpus);
- Lucene idf (`idf="lucene"`): idf(w) = ln(1 + (N − df + 0.5) / (df + 0.5)), always > 0. The Okapi
  idf goes negative for a word in more than half of the documents, so on a memory of a few items a
  matching item can rank *below* one that does not match at all;
- score(d) = Σ over query words, repeats included, of idf · tf·(k1+1) / (tf + k1·(1 − b + b·|d|/avgdl)).

Beyond the reference: an empty corpus, or one whose documents have no words, scores every query as
zeros (the reference divides by zero), and `ranked` breaks score ties by position.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from app.retrieval.tokens import COMPOUND_MIN_HEAD, COMPOUND_MIN_PART


@dataclass(frozen=True)
class BM25Params:
    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25
    idf: Literal["okapi", "lucene"] = "okapi"


OKAPI = BM25Params()  # SPEC §4: rank-bm25's defaults
LUCENE = BM25Params(k1=1.2, idf="lucene")  # Lucene's BM25Similarity


class BM25Index:
    """An immutable index over tokenised documents; positions are the documents' order.

    Postings are stored CSR-style: one array of document positions and one of term frequencies, grouped
    by word, with `_start[w]:_start[w + 1]` the slice of word id `w`."""

    def __init__(self, corpus: Sequence[Sequence[str]], params: BM25Params = OKAPI) -> None:
        self.params = params
        self.size = len(corpus)
        doc_lens = np.array([len(doc) for doc in corpus], dtype=np.int64)
        self._word_ids: dict[str, int] = {}  # in first-occurrence order, like the reference's vocabulary
        word_of: list[int] = []
        doc_of: list[int] = []
        freq_of: list[int] = []
        for position, doc in enumerate(corpus):
            for word, freq in Counter(doc).items():
                word_of.append(self._word_ids.setdefault(word, len(self._word_ids)))
                doc_of.append(position)
                freq_of.append(freq)
        words = np.array(word_of, dtype=np.intp)
        order = np.argsort(words, kind="stable")  # keeps each word's documents in position order
        self._docs = np.array(doc_of, dtype=np.intp)[order]
        self._freqs = np.array(freq_of, dtype=np.int64)[order]
        self._df = np.bincount(words, minlength=len(self._word_ids))
        self._start = np.concatenate(([0], np.cumsum(self._df)))
        self._idf = self._compute_idf()
        self._tails: dict[str, list[str]] | None = None  # built on the first `compounds` call
        total = int(doc_lens.sum())
        if total:
            avgdl = total / self.size
            # Same expression and evaluation order as the reference's denominator term.
            self._norm = params.k1 * (1 - params.b + params.b * doc_lens / avgdl)
        else:
            self._norm = np.zeros(self.size)

    def _compute_idf(self) -> list[float]:
        if self.params.idf == "lucene":
            return [math.log(1 + (self.size - df + 0.5) / (df + 0.5)) for df in self._df.tolist()]
        idf: list[float] = []
        idf_sum = 0.0
        for df in self._df.tolist():  # word-id order = the reference's summation order
            value = math.log(self.size - df + 0.5) - math.log(df + 0.5)
            idf.append(value)
            idf_sum += value
        if idf:
            floor = self.params.epsilon * (idf_sum / len(idf))
            idf = [floor if value < 0 else value for value in idf]
        return idf

    def idf(self, word: str) -> float:
        """The (floored) idf of a word; 0 for a word that no document has."""
        word_id = self._word_ids.get(word)
        return 0.0 if word_id is None else self._idf[word_id]

    def compounds(self, part: str) -> list[str]:
        """The indexed words that are compounds ending in `part` (`tokens.compound_of`), in
        vocabulary order."""
        if self._tails is None:
            tails: dict[str, list[str]] = {}
            for word in self._word_ids:
                for start in range(COMPOUND_MIN_HEAD, len(word) - COMPOUND_MIN_PART + 1):
                    tails.setdefault(word[start:], []).append(word)
            self._tails = tails
        return self._tails.get(part, [])

    def doc_freq(self, word: str) -> int:
        """How many documents contain the word."""
        word_id = self._word_ids.get(word)
        return 0 if word_id is None else int(self._df[word_id])

    def scores(self, query: Sequence[str]) -> npt.NDArray[np.float64]:
        """One score per document, in document order."""
        score = np.zeros(self.size)
        k1 = self.params.k1
        for word in query:
            word_id = self._word_ids.get(word)
            if word_id is None:
                continue
            span = slice(self._start[word_id], self._start[word_id + 1])
            docs, tf = self._docs[span], self._freqs[span]
            score[docs] += self._idf[word_id] * (tf * (k1 + 1) / (tf + self._norm[docs]))
        return score

    def ranked(self, query: Sequence[str], k: int, *, matching: bool = False) -> list[tuple[int, float]]:
        """The top `k` (position, score) pairs: score descending, ties by position ascending (older
        items first). Every document is rankable, zero scores included, as upstream's top-k was;
        `matching` keeps only documents that contain a query word."""
        if k <= 0 or self.size == 0:
            return []
        score = self.scores(query)
        candidates = self.matches(query) if matching else np.arange(self.size)
        top = _top_k(candidates, score[candidates], k)
        return [(int(position), float(score[position])) for position in top]

    def matches(self, query: Sequence[str]) -> npt.NDArray[np.intp]:
        """Positions of the documents that contain at least one query word."""
        spans = [
            self._docs[self._start[word_id] : self._start[word_id + 1]]
            for word in set(query)
            if (word_id := self._word_ids.get(word)) is not None
        ]
        return np.unique(np.concatenate(spans)) if spans else np.zeros(0, dtype=np.intp)


def _top_k(positions: npt.NDArray[np.intp], score: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.intp]:
    """The `k` best of `positions` (ascending) by `score` (aligned with them): score descending, ties
    by position. A partial sort: only the candidates at or above the k-th best score get sorted, so a
    query costs O(n + k log k) instead of a full O(n log n) sort of the memory."""
    if k < len(positions):
        kth = -np.partition(-score, k - 1)[k - 1]  # the k-th best score
        above = np.flatnonzero(score > kth)
        ties = np.flatnonzero(score == kth)[: k - len(above)]  # the oldest of the tied ones
        keep = np.concatenate((above, ties))
        positions, score = positions[keep], score[keep]
    return positions[np.lexsort((positions, -score))][:k]
