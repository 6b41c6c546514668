"""The index of a new memory version is derived from the index of an earlier one (only new and edited
items are indexed, removed ones are marked dead): after any inserts, updates and deletes it must score,
rank and answer every lookup exactly as an index built from scratch."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.memory import LIST_KINDS, Item, MemoryKind, MemoryState
from app.retrieval import BM25Index, Retriever
from app.retrieval.bm25 import LUCENE, OKAPI

NOW = datetime(2024, 1, 1, tzinfo=UTC)
# Compounds ("beehive" and "wildhive" of "hive", "sailboat" and "rowboat" of "boat") make `compounds` order
# matter; "the" in most items drives okapi idf negative, so its floor (the mean idf) is exercised.
WORDS = ["bee", "bees", "hive", "beehive", "honeybees", "honey", "wax", "queen", "the", "stings"]
WORDS += ["stinging", "boat", "sailboat", "rowboat", "wildhive", "the", "the"]
texts = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
# (operation, kind, which item, new content); "recreate" starts an empty memory at version 0, like a
# session deleted and created again under the same caller key; "move" takes an item out and puts it
# back elsewhere (positions change, the item does not).
steps = st.lists(
    st.tuples(
        st.sampled_from(["insert", "insert", "insert", "update", "delete", "move", "recreate"]),
        st.sampled_from(LIST_KINDS),
        st.integers(0, 50),
        texts,
    ),
    min_size=1,
    max_size=40,
)
# Always derive (no rebuild while garbage is below 10^9 × the size), the service default, always rebuild.
garbage = st.sampled_from([1e9, 0.25, 0.0])


def _apply(state: MemoryState, step: tuple[str, MemoryKind, int, str]) -> MemoryState:
    op, kind, which, content = step
    if op == "recreate":
        return MemoryState()
    items = state.items(kind)
    if op == "insert":
        items.append(Item(f"i{state.next_item}", content, NOW, NOW))
        state.next_item += 1
    elif items and op == "update":
        old = items[which % len(items)]
        items[which % len(items)] = Item(old.id, content, old.created_at, NOW)
    elif items and op == "delete":
        del items[which % len(items)]
    elif items and op == "move":
        items.insert(len(content) % (len(items)), items.pop(which % len(items)))
    state.version += 1
    return state


def _same(derived: BM25Index, built: BM25Index, queries: list[list[str]]) -> None:
    assert derived.size == built.size
    for terms in queries:
        assert np.array_equal(derived.scores(terms), built.scores(terms))
        assert derived.ranked(terms, built.size) == built.ranked(terms, built.size)
        assert derived.ranked(terms, built.size, matching=True) == built.ranked(
            terms, built.size, matching=True
        )
        assert np.array_equal(derived.matches(terms), built.matches(terms))
        for word in terms:
            assert derived.doc_freq(word) == built.doc_freq(word)
            assert derived.idf(word) == built.idf(word)
            assert derived.compounds(word) == built.compounds(word)


@settings(max_examples=300, deadline=None)
@given(
    steps=steps,
    queries=st.lists(texts, min_size=1, max_size=3),
    scorer=st.sampled_from(["okapi", "lucene"]),
    max_garbage=garbage,
)
def test_index_of_a_new_version_equals_a_fresh_index(
    steps: list[tuple[str, MemoryKind, int, str]], queries: list[str], scorer: str, max_garbage: float
) -> None:
    kept = Retriever(scorer=scorer, max_garbage=max_garbage)  # type: ignore[arg-type]
    state = MemoryState()
    for step in steps:
        state = _apply(state, step)
        fresh = Retriever(scorer=scorer)  # type: ignore[arg-type]
        for kind in LIST_KINDS:
            derived, built = kept.index(state, kind, "s").index, fresh.index(state, kind, "s").index
            terms = [kept.query_terms(query) for query in queries]
            # With the compounds of the query words, as `search` queries.
            _same(derived, built, terms + [[*words, *kept.compounds(built, words)] for words in terms])
        for query in queries:  # the whole search path, items included
            assert kept.search(state, query, 50, key="s") == fresh.search(state, query, 50, key="s")


@settings(max_examples=200, deadline=None)
@given(
    docs=st.lists(st.lists(st.sampled_from(WORDS), max_size=5), max_size=12),
    edits=st.lists(st.tuples(st.integers(0, 30), st.lists(st.sampled_from(WORDS), max_size=5)), max_size=12),
    params=st.sampled_from([OKAPI, LUCENE]),
)
def test_updated_index_equals_a_fresh_index(
    docs: list[list[str]], edits: list[tuple[int, list[str]]], params: object
) -> None:
    """`BM25Index.updated` directly, through several generations: each edit keeps every other document,
    drops one (odd index), inserts a new one or replaces one (even index)."""
    index = BM25Index(docs, params)  # type: ignore[arg-type]
    for which, new in edits:
        entries: list[int | list[str]] = list(range(len(docs)))
        if docs and which % 2:
            del entries[which % len(docs)]
        elif docs and which % 4 == 2:
            entries[which % len(docs)] = new
        else:
            entries.insert(which % (len(docs) + 1), new)
        docs = [docs[entry] if isinstance(entry, int) else entry for entry in entries]
        kept = [entry if isinstance(entry, int) else -1 for entry in entries]
        index = index.updated(
            kept, [entry for entry in entries if not isinstance(entry, int)], max_garbage=1e9
        )
        _same(index, BM25Index(docs, params), [[word] for word in WORDS] + [WORDS, ["missing", "the"]])  # type: ignore[arg-type]


def test_a_document_kept_twice_is_refused() -> None:
    index = BM25Index([["bee"], ["hive"]])
    with pytest.raises(ValueError, match="twice"):
        index.updated([0, 0, -1], [["wax"]], max_garbage=1e9)
    with pytest.raises(ValueError, match="one added document"):
        index.updated([0, -1], [], max_garbage=1e9)
