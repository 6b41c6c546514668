"""Per-kind BM25 search over a memory, with an LRU cache of built indexes.

An index is cached under (caller key, kind, memory version); the caller key names whose memory it is
(e.g. `(tenant, session)`; None is one shared slot). Each entry also keeps the (id, content) pairs it
was built from and is used only if they still match the state: a recreated session, or two rollouts
that share a key, can reach the same version number with different items, and must not read each
other's index. Ranking: BM25 score descending, ties by position in memory (older items first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from app.memory import LIST_KINDS, Item, MemoryKind, MemoryState
from app.metrics import RETRIEVAL_LATENCY
from app.retrieval.bm25 import OKAPI, BM25Index, BM25Params
from app.retrieval.tokens import bm25_tokens


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


@dataclass(frozen=True)
class KindIndex:
    """A kind's items at one version and the BM25 index over their contents (same positions)."""

    fingerprint: tuple[tuple[str, str], ...]
    index: BM25Index


def _fingerprint(items: list[Item]) -> tuple[tuple[str, str], ...]:
    return tuple((item.id, item.content) for item in items)


class Retriever:
    def __init__(self, max_entries: int = 1024, params: BM25Params = OKAPI) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.params = params
        self._cache: OrderedDict[tuple[Hashable, MemoryKind, int], KindIndex] = OrderedDict()
        # The trainer may search from worker threads; the lock keeps the LRU bookkeeping consistent.
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def index(self, state: MemoryState, kind: MemoryKind, key: Hashable = None) -> KindIndex:
        items = state.items(kind)
        fingerprint = _fingerprint(items)
        slot = (key, kind, state.version)
        with self._lock:
            cached = self._cache.get(slot)
            if cached is not None and cached.fingerprint == fingerprint:
                self._cache.move_to_end(slot)
                self._hits += 1
                return cached
            self._misses += 1
        built = KindIndex(fingerprint, BM25Index([bm25_tokens(item.content) for item in items], self.params))
        with self._lock:
            self._cache[slot] = built
            self._cache.move_to_end(slot)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return built

    def search(
        self,
        state: MemoryState,
        query: str,
        k: int,
        kinds: Iterable[MemoryKind] = LIST_KINDS,
        key: Hashable = None,
    ) -> dict[MemoryKind, list[ScoredItem]]:
        """The top `k` items of each kind for `query` (fewer when the kind has fewer items)."""
        with RETRIEVAL_LATENCY.time():
            words = bm25_tokens(query)
            results: dict[MemoryKind, list[ScoredItem]] = {}
            for kind in kinds:
                items = state.items(kind)
                ranked = self.index(state, kind, key).index.ranked(words, k)
                results[kind] = [ScoredItem(items[position], score) for position, score in ranked]
            return results

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self._hits, self._misses, len(self._cache), self.max_entries)
