"""An index built for a new memory version reuses the analysed terms of the items that did not change
since the last index of that memory: after any inserts, updates and deletes it must rank and score
exactly as an index built from scratch."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.memory import LIST_KINDS, Item, MemoryKind, MemoryState
from app.retrieval import Retriever

NOW = datetime(2024, 1, 1, tzinfo=UTC)
WORDS = ["bee", "bees", "hive", "honey", "wax", "queen", "drone", "the", "stings", "stinging"]
texts = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
# (operation, kind, which item, new content); "recreate" starts an empty memory at version 0, like a
# session deleted and created again under the same caller key.
steps = st.lists(
    st.tuples(
        st.sampled_from(["insert", "insert", "update", "delete", "recreate"]),
        st.sampled_from(LIST_KINDS),
        st.integers(0, 50),
        texts,
    ),
    min_size=1,
    max_size=40,
)


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
    state.version += 1
    return state


@settings(max_examples=200, deadline=None)
@given(
    steps=steps, queries=st.lists(texts, min_size=1, max_size=3), scorer=st.sampled_from(["okapi", "lucene"])
)
def test_index_of_a_new_version_equals_a_fresh_index(
    steps: list[tuple[str, MemoryKind, int, str]], queries: list[str], scorer: str
) -> None:
    kept = Retriever(scorer=scorer)  # type: ignore[arg-type]
    state = MemoryState()
    for step in steps:
        state = _apply(state, step)
        fresh = Retriever(scorer=scorer)  # type: ignore[arg-type]
        for kind in LIST_KINDS:
            reused, built = kept.index(state, kind, "s").index, fresh.index(state, kind, "s").index
            for query in queries:
                terms = kept.query_terms(query)
                assert np.array_equal(reused.scores(terms), built.scores(terms))
                size = len(state.items(kind))
                assert reused.ranked(terms, size) == built.ranked(terms, size)
                assert reused.ranked(terms, size, matching=True) == built.ranked(terms, size, matching=True)
