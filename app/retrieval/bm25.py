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
from collections.abc import Iterable, Sequence
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


_Span = tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]  # (document slots, term frequencies)


class _Postings:
    """The postings of the documents an index was built from, CSR-style: one array of document slots
    and one of term frequencies, grouped by word, `start[w]:start[w + 1]` the slice of word id `w`.
    Immutable; the versions updated from that index share it."""

    def __init__(self, corpus: Sequence[Sequence[str]]) -> None:
        self.size = len(corpus)
        self.word_ids: dict[str, int] = {}  # in first-occurrence order, like the reference's vocabulary
        word_of: list[int] = []
        doc_of: list[int] = []
        freq_of: list[int] = []
        for position, doc in enumerate(corpus):
            for word, freq in Counter(doc).items():
                word_of.append(self.word_ids.setdefault(word, len(self.word_ids)))
                doc_of.append(position)
                freq_of.append(freq)
        words = np.array(word_of, dtype=np.intp)
        order = np.argsort(words, kind="stable")  # keeps each word's documents in position order
        self.docs = np.array(doc_of, dtype=np.intp)[order]
        self.freqs = np.array(freq_of, dtype=np.int64)[order]
        self.df = np.bincount(words, minlength=len(self.word_ids))
        self.start = np.concatenate(([0], np.cumsum(self.df)))
        self._tails: dict[str, list[str]] | None = None  # built on the first `compounds` call

    def span(self, word: str) -> _Span | None:
        word_id = self.word_ids.get(word)
        if word_id is None:
            return None
        span = slice(self.start[word_id], self.start[word_id + 1])
        return self.docs[span], self.freqs[span]

    def compounds(self, part: str) -> list[str]:
        if self._tails is None:
            self._tails = _tails(self.word_ids)
        return self._tails.get(part, [])


def _tails(words: Iterable[str]) -> dict[str, list[str]]:
    """Each part → the words that are compounds ending in it (`tokens.compound_of`), in `words` order."""
    tails: dict[str, list[str]] = {}
    for word in words:
        for start in range(COMPOUND_MIN_HEAD, len(word) - COMPOUND_MIN_PART + 1):
            tails.setdefault(word[start:], []).append(word)
    return tails


def _norms(lens: npt.NDArray[np.int64], total: int, size: int, params: BM25Params) -> npt.NDArray[np.float64]:
    if not total:
        return np.zeros(len(lens))
    avgdl = total / size
    # Same expression and evaluation order as the reference's denominator term (element-wise, so an
    # element's value does not depend on the other elements).
    return (params.k1 * (1 - params.b + params.b * lens / avgdl)).astype(np.float64, copy=False)


class BM25Index:
    """An immutable index over tokenised documents; positions are the documents' order.

    A document lives in a slot; `updated` derives the index of a changed corpus by adding slots for the
    new documents and marking the removed ones dead, sharing the postings of the slots it keeps. Every
    score is then computed exactly as the index built from scratch computes it: same N, df, average
    length and idf values, and each document's sum over the query words in the same order (a
    document is in one posting per word), so the two are bitwise equal (`tests/test_retrieval_versions.py`)."""

    def __init__(self, corpus: Sequence[Sequence[str]], params: BM25Params = OKAPI) -> None:
        self.params = params
        self.size = len(corpus)
        self._base = _Postings(corpus)
        self._extra: dict[str, _Span] = {}  # postings of the slots added since the base was built
        self._terms: list[Sequence[str]] = list(corpus)  # each slot's document
        self._lens = np.array([len(doc) for doc in corpus], dtype=np.int64)  # each slot's length
        # Position → slot and slot → position (-1: dead); None while they are the identity, as built.
        self._slots: npt.NDArray[np.intp] | None = None
        self._position_of: npt.NDArray[np.intp] | None = None
        self._norm = _norms(self._lens, int(self._lens.sum()), self.size, params)
        self._init_caches()

    def _init_caches(self) -> None:
        # Filled on demand, per version (a version's documents never change, so neither do they).
        self._df: dict[str, int] = {}
        self._floor: float | None = None  # okapi: epsilon · mean idf of the vocabulary
        self._extra_tails: dict[str, list[str]] | None = None

    @property
    def _pristine(self) -> bool:
        """The documents are those the base was built from, in the same slots."""
        return self._slots is None and not self._extra

    def updated(
        self,
        kept: Sequence[int] | npt.NDArray[np.intp],
        added: Sequence[Sequence[str]],
        *,
        max_garbage: float = 0.25,
    ) -> BM25Index:
        """The index of a new corpus: document i is this index's document at position `kept[i]`
        (unchanged), or, where `kept[i]` is -1, the next of `added` (a new document's terms). Only the
        added documents are indexed; when the dead and added slots since the last full build exceed
        `max_garbage` × the new size, the index is built afresh from the documents' terms (still no
        analysis) to keep queries fast."""
        n_slots = len(self._lens)
        positions = np.asarray(kept, dtype=np.intp)
        size, new = len(positions), positions < 0
        if int(np.count_nonzero(new)) != len(added):
            raise ValueError("one added document per -1 in `kept`")
        slot_array = np.empty(size, dtype=np.intp)
        old = positions[~new]
        slot_array[~new] = old if self._slots is None else self._slots[old]
        slot_array[new] = np.arange(n_slots, n_slots + len(added))
        total_slots = n_slots + len(added)
        terms = self._terms + list(added)
        if (total_slots - size) + (total_slots - self._base.size) > max_garbage * size:
            return BM25Index([terms[slot] for slot in slot_array.tolist()], self.params)
        position_of = np.full(total_slots, -1, dtype=np.intp)
        position_of[slot_array] = np.arange(size)
        if int(np.count_nonzero(position_of >= 0)) != size:
            raise ValueError("a kept document appears twice in the new corpus")
        out = object.__new__(BM25Index)
        out.params, out.size, out._base, out._terms = self.params, size, self._base, terms
        out._extra = self._extra_with(added, n_slots)
        out._lens = np.concatenate((self._lens, np.array([len(doc) for doc in added], dtype=np.int64)))
        identity = total_slots == size and bool(np.array_equal(slot_array, np.arange(size)))
        out._slots = None if identity else slot_array
        out._position_of = None if identity else position_of
        out._norm = _norms(out._lens, int(out._lens[slot_array].sum()), size, self.params)
        out._init_caches()
        return out

    def _extra_with(self, added: Sequence[Sequence[str]], first_slot: int) -> dict[str, _Span]:
        """The added postings plus those of `added` (slots from `first_slot`); copy on write."""
        grouped: dict[str, tuple[list[int], list[int]]] = {}
        for slot, doc in enumerate(added, first_slot):
            for word, freq in Counter(doc).items():
                docs, freqs = grouped.setdefault(word, ([], []))
                docs.append(slot)
                freqs.append(freq)
        extra = dict(self._extra)
        for word, (docs, freqs) in grouped.items():
            new: _Span = (np.array(docs, dtype=np.intp), np.array(freqs, dtype=np.int64))
            if word in extra:
                new = (np.concatenate((extra[word][0], new[0])), np.concatenate((extra[word][1], new[1])))
            extra[word] = new
        return extra

    def _postings(self, word: str) -> list[_Span]:
        spans = [span] if (span := self._base.span(word)) is not None else []
        if word in self._extra:
            spans.append(self._extra[word])
        return spans

    def doc_freq(self, word: str) -> int:
        """How many documents contain the word."""
        df = self._df.get(word)
        if df is None:
            alive = self._position_of
            df = sum(
                len(docs) if alive is None else int(np.count_nonzero(alive[docs] >= 0))
                for docs, _ in self._postings(word)
            )
            self._df[word] = df
        return df

    def idf(self, word: str) -> float:
        """The (floored) idf of a word; 0 for a word that no document has."""
        df = self.doc_freq(word)
        if not df:
            return 0.0
        if self.params.idf == "lucene":
            return math.log(1 + (self.size - df + 0.5) / (df + 0.5))
        value = math.log(self.size - df + 0.5) - math.log(df + 0.5)
        return self._okapi_floor() if value < 0 else value

    def _okapi_floor(self) -> float:
        """epsilon · the mean unfloored idf over the vocabulary, summed in the reference's order (first
        occurrence in the corpus). After an update this walks every live document once per version:
        only the okapi scorer needs it, and only for a word in more than half of the documents."""
        if self._floor is None:
            if self._pristine:
                dfs = self._base.df.tolist()
            else:
                counts: dict[str, int] = {}
                for slot in self._live_slots():
                    for word in dict.fromkeys(self._terms[slot]):
                        counts[word] = counts.get(word, 0) + 1
                dfs = list(counts.values())
            idf_sum = 0.0
            for df in dfs:
                idf_sum += math.log(self.size - df + 0.5) - math.log(df + 0.5)
            self._floor = self.params.epsilon * (idf_sum / len(dfs)) if dfs else 0.0
        return self._floor

    def _live_slots(self) -> list[int]:
        return list(range(self.size)) if self._slots is None else self._slots.tolist()

    def compounds(self, part: str) -> list[str]:
        """The indexed words that are compounds ending in `part` (`tokens.compound_of`), in
        vocabulary order."""
        if self._pristine:
            return self._base.compounds(part)
        if self._extra_tails is None:
            self._extra_tails = _tails(word for word in self._extra if word not in self._base.word_ids)
        found = [
            word
            for word in (*self._base.compounds(part), *self._extra_tails.get(part, []))
            if self.doc_freq(word)
        ]
        return sorted(found, key=self._first_occurrence) if len(found) > 1 else found

    def _first_occurrence(self, word: str) -> tuple[int, int]:
        """Where a word enters the vocabulary of the corpus: (position of the first document with it,
        its rank among that document's distinct words)."""
        slots = np.concatenate([docs for docs, _ in self._postings(word)])
        positions = slots if self._position_of is None else self._position_of[slots]
        first = int(positions[positions >= 0].min())
        slot = first if self._slots is None else int(self._slots[first])
        return first, list(dict.fromkeys(self._terms[slot])).index(word)

    def scores(self, query: Sequence[str]) -> npt.NDArray[np.float64]:
        """One score per document, in document order."""
        score = np.zeros(len(self._lens))  # per slot
        k1 = self.params.k1
        for word in query:
            if not self.doc_freq(word):
                continue
            idf = self.idf(word)
            for docs, tf in self._postings(word):
                score[docs] += idf * (tf * (k1 + 1) / (tf + self._norm[docs]))
        return score if self._slots is None else score[self._slots]

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
        spans = [docs for word in set(query) for docs, _ in self._postings(word)]
        if not spans:
            return np.zeros(0, dtype=np.intp)
        slots = np.concatenate(spans)
        if self._position_of is None:
            return np.unique(slots)
        positions = self._position_of[slots]
        return np.unique(positions[positions >= 0])


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
