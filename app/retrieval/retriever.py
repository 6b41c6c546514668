"""Per-kind BM25 search over a memory, with an LRU cache of built indexes.

An index is cached under (caller key, kind, memory version); the caller key names whose memory it is
(e.g. `(tenant, session)`; None is one shared slot). Every change to a memory goes through the applier,
which bumps the version, so the version stands for the items. The same version number may still hold
other items in another `MemoryState` (a recreated session, two rollouts sharing a key): an entry
remembers the state object it was built for and serves that one at once (O(1) per query); another
object at the same slot is compared item by item once, and the entry then follows it. Ranking: BM25
score descending, ties by position in memory (older items first).

A retriever uses one `Scorer`: `okapi` is SPEC §4 as the paper ran it (rank-bm25's BM25Okapi over plain
words; the trainer's reward keeps it), `lucene` is the service default (Lucene idf, light stemming,
stopwords out of the query), which behaves on memories of a handful of items.

What an item is indexed by: its content, and with `cues` (the answer context's budget mode) its
index-only cues too (`Item.cues`). The two are separate indexes under separate cache slots; without
`cues` (top-k, SPEC §4, the trainer's reward) the index is the content's alone, as it always was.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter
from typing import Literal

import numpy as np

from app.memory import LIST_KINDS, Item, MemoryKind, MemoryState
from app.retrieval.bm25 import LUCENE, OKAPI, BM25Index, BM25Params
from app.retrieval.tokens import PLAIN, STEMMED, Analyzer

ScorerName = Literal["okapi", "lucene"]


@dataclass(frozen=True)
class Scorer:
    name: ScorerName
    params: BM25Params
    analyzer: Analyzer


SCORERS: dict[ScorerName, Scorer] = {
    "okapi": Scorer("okapi", OKAPI, PLAIN),
    "lucene": Scorer("lucene", LUCENE, STEMMED),
}


@dataclass(frozen=True)
class ScoredItem:
    item: Item
    score: float


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    size: int
    max_entries: int


@dataclass
class KindIndex:
    """A kind's items at one version and the BM25 index over their indexed texts (same positions)."""

    fingerprint: tuple[tuple[str, str], ...]
    index: BM25Index
    # The state this entry was last checked against (a weak reference: the cache must not keep
    # memories alive); the fingerprint is compared only when another state object comes along.
    owner: weakref.ref[MemoryState]


def _fingerprint(items: list[Item], cues: bool) -> tuple[tuple[str, str], ...]:
    """(id, indexed text) per item: its content, with `cues` followed by its cues on their own line."""
    return tuple(zip(map(_ID, items), map(_with_cues if cues else _CONTENT, items)))


_ID, _CONTENT = attrgetter("id"), attrgetter("content")


def _with_cues(item: Item) -> str:
    return f"{item.content}\n{item.cues}" if item.cues else item.content


class Retriever:
    def __init__(
        self,
        max_entries: int = 1024,
        scorer: Scorer | ScorerName = "okapi",
        *,
        observe: Callable[[float], None] | None = None,
        max_garbage: float = 0.25,
    ) -> None:
        """`observe`: called with each search's seconds (the service records them as a metric).
        `max_garbage`: how many removed and added items an index derived from earlier versions may
        carry, as a fraction of the memory, before the next version is built afresh
        (`BM25Index.updated`)."""
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.scorer = SCORERS[scorer] if isinstance(scorer, str) else scorer
        # Keyed by (caller key, kind, version, cues); the last built per memory (and cached) by the
        # same without the version.
        self._cache: OrderedDict[tuple[Hashable, MemoryKind, int, bool], KindIndex] = OrderedDict()
        self._newest: dict[tuple[Hashable, MemoryKind, bool], KindIndex] = {}
        # The trainer may search from worker threads; the lock keeps the LRU bookkeeping consistent.
        self._lock = threading.Lock()
        self._observe = observe
        self._max_garbage = max_garbage
        self._hits = 0
        self._misses = 0

    def index(
        self, state: MemoryState, kind: MemoryKind, key: Hashable = None, *, cues: bool = False
    ) -> KindIndex:
        """The index of `kind`'s items of `state`; with `cues`, over their contents and cues."""
        items = state.items(kind)
        slot = (key, kind, state.version, cues)
        with self._lock:
            cached = self._cache.get(slot)
            if cached is not None and (
                cached.owner() is state or cached.fingerprint == _fingerprint(items, cues)
            ):
                cached.owner = weakref.ref(state)
                self._cache.move_to_end(slot)
                self._hits += 1
                return cached
            self._misses += 1
            previous = self._newest.get((key, kind, cues))
        fingerprint = _fingerprint(items, cues)
        index = self._build(fingerprint, previous)
        built = KindIndex(fingerprint, index, weakref.ref(state))
        with self._lock:
            self._cache[slot] = built
            self._cache.move_to_end(slot)
            self._newest[key, kind, cues] = built
            while len(self._cache) > self.max_entries:
                (old_key, old_kind, _, old_cues), evicted = self._cache.popitem(last=False)
                if self._newest.get((old_key, old_kind, old_cues)) is evicted:
                    del self._newest[old_key, old_kind, old_cues]
        return built

    def _build(self, fingerprint: tuple[tuple[str, str], ...], previous: KindIndex | None) -> BM25Index:
        """The index of a new version of a memory. Derived from the last index built for that memory
        (caller key and kind) when there is one: items whose (id, content) did not change keep their
        document, only new and edited items are analysed and indexed (`BM25Index.updated`, equal to a
        build from scratch), so the first search after a write costs O(change) plus a diff of the ids."""
        analyze = self.scorer.analyzer.index_terms
        if previous is None:
            return BM25Index([analyze(content) for _, content in fingerprint], self.scorer.params)
        before = len(previous.fingerprint)
        if fingerprint[:before] == previous.fingerprint:  # the memory only grew: one C-level compare
            kept = np.concatenate((np.arange(before), np.full(len(fingerprint) - before, -1))).astype(np.intp)
        else:
            # C-level passes over the pairs (a dict from zip, `map` of `pop`). `pop`: a pair that
            # occurs twice keeps its document once and is new the second time.
            known = dict(zip(previous.fingerprint, range(before)))
            kept = np.array(list(map(known.pop, fingerprint, repeat(-1))), dtype=np.intp)
        added = [analyze(fingerprint[at][1]) for at in np.flatnonzero(kept < 0).tolist()]
        return previous.index.updated(kept, added, max_garbage=self._max_garbage)

    def search(
        self,
        state: MemoryState,
        query: str,
        k: int,
        kinds: Iterable[MemoryKind] = LIST_KINDS,
        key: Hashable = None,
        *,
        matching: bool = False,
    ) -> dict[MemoryKind, list[ScoredItem]]:
        """The top `k` items of each kind for `query` (fewer when the kind has fewer items); with
        `matching`, only items that share a query term."""
        started = time.perf_counter()
        words = self.query_terms(query)
        results: dict[MemoryKind, list[ScoredItem]] = {}
        for kind in kinds:
            items = state.items(kind)
            index = self.index(state, kind, key).index
            terms = [*words, *self.compounds(index, words)]
            ranked = index.ranked(terms, k, matching=matching)
            results[kind] = [ScoredItem(items[position], score) for position, score in ranked]
        if self._observe is not None:
            self._observe(time.perf_counter() - started)
        return results

    def matching(
        self,
        state: MemoryState,
        terms: list[str],
        kind: MemoryKind,
        key: Hashable = None,
        *,
        limit: int | None = None,
        batch: int = 256,
        cues: bool = False,
    ) -> Iterator[tuple[int, ScoredItem]]:
        """(position, item) for the items of `kind` that share one of `terms` (analysed query terms),
        best first, in `search(matching=True)`'s order, at most `limit`. The ranking is done for a
        batch at a time, each batch four times the last, so a caller that stops after a few items (a
        token budget) does not pay for ranking and wrapping every match of a large memory. With
        `cues`, an item matches by its cues as by its content (`index`)."""
        index = self.index(state, kind, key, cues=cues).index
        terms = [*terms, *self.compounds(index, terms)]  # as `search` does
        items = state.items(kind)
        cap = index.size if limit is None else min(limit, index.size)
        done, size = 0, min(batch, cap)
        while done < cap:
            ranked = index.ranked(terms, size, matching=True)
            for position, score in ranked[done:]:
                yield position, ScoredItem(items[position], score)
            if len(ranked) < size:  # fewer matches than asked: there are no more
                return
            done, size = size, min(size * 4, cap)

    def query_terms(self, query: str) -> list[str]:
        return self.scorer.analyzer.query_terms(query)

    def compounds(self, index: BM25Index, words: list[str]) -> list[str]:
        """The indexed compounds of the query words, searched as further query words (with the
        analyzer's `compounds`; none otherwise): "boat" finds the item about a sailboat."""
        if not self.scorer.analyzer.compounds:
            return []
        return [compound for word in words for compound in index.compounds(word)]

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self.max_entries)
