"""BM25 retrieval: equivalence with rank-bm25 on real text, tie-breaks, edge cases, the index cache."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rank_bm25 import BM25Okapi
from shared_data import DATA

from app.memory import Item, MemoryKind, MemoryState
from app.retrieval import LUCENE, BM25Index, Retriever, bm25_tokens, compound_of, compound_parts
from trainer.corpus import load_conversation

SQUAD = DATA / "squad" / "squad_dev_v1.1_articles_00-23.json"
LOCOMO = DATA / "locomo" / "locomo_dev.json"
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _require(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"shared data missing: {path} (tests read ../shared/data)")
    return path


def _squad() -> tuple[list[str], list[str]]:
    articles = json.loads(_require(SQUAD).read_text())["data"]
    paragraphs = [p for article in articles for p in article["paragraphs"]]
    docs = [p["context"] for p in paragraphs[:400]]
    questions = [qa["question"] for p in paragraphs[:400:2] for qa in p["qas"][:2]]
    return docs, questions


def _locomo() -> tuple[list[str], list[str]]:
    conversation = load_conversation(_require(LOCOMO), "conv-26")
    return [turn.line() for turn in conversation.turns], [qa.question for qa in conversation.qa]


def _reference_ranking(scores: np.ndarray, k: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


@pytest.mark.parametrize("source", [_squad, _locomo], ids=["squad-paragraphs", "locomo-turns"])
def test_scores_and_rankings_equal_rank_bm25_on_real_text(source) -> None:
    docs, questions = source()
    corpus = [bm25_tokens(doc) for doc in docs]
    # Repeated words and out-of-vocabulary words exercise the reference's per-occurrence sum and its 0 idf.
    queries = [bm25_tokens(q) for q in questions] + [["the", "the", "and"], ["zzzunseenword"], []]
    assert len(corpus) >= 400 and len(queries) >= 200
    reference = BM25Okapi(corpus)
    # The idf floor (epsilon * mean idf for words in more than half of the documents) must be exercised.
    floored = reference.epsilon * reference.average_idf
    assert any(value == floored for value in reference.idf.values())
    index = BM25Index(corpus)
    for query in queries:
        expected = reference.get_scores(query)
        got = index.scores(query)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        assert np.array_equal(got, expected)  # same operations in the same order: bitwise equal
        ranked = index.ranked(query, 20)
        assert [position for position, _ in ranked] == _reference_ranking(expected, 20)
        assert [score for _, score in ranked] == [expected[i] for i in _reference_ranking(expected, 20)]
    for word in {w for doc in corpus for w in doc}:
        assert index.idf(word) == reference.idf[word]


def test_small_corpora_match_reference_including_negative_floor() -> None:
    # One document: every idf is negative, the mean is negative, so the floor is negative too.
    for corpus in (
        [["alice", "likes", "tea"]],
        [["alice", "likes", "tea"], ["bob", "likes", "coffee"]],
        [["a", "b"], ["a", "c"], ["a", "b", "b"], []],
    ):
        reference, index = BM25Okapi(corpus), BM25Index(corpus)
        for query in (["likes"], ["tea", "likes", "tea"], ["b", "a"], ["nothing"]):
            assert np.array_equal(index.scores(query), reference.get_scores(query))


def test_ties_break_by_position() -> None:
    corpus = [["green", "pear"], ["red", "apple"], ["blue", "plum"], ["red", "apple"], ["ripe", "fig"]]
    index = BM25Index(corpus)
    ranked = index.ranked(["apple"], 5)
    assert ranked[0][1] == ranked[1][1] > 0
    assert [position for position, _ in ranked] == [1, 3, 0, 2, 4]
    # An empty query scores everything zero: memory order.
    assert index.ranked([], 3) == [(0, 0.0), (1, 0.0), (2, 0.0)]


def test_edge_cases() -> None:
    empty = BM25Index([])
    assert empty.scores(["x"]).shape == (0,)
    assert empty.ranked(["x"], 5) == []
    wordless = BM25Index([[], []])  # rank-bm25 divides by zero here
    assert wordless.scores(["x"]).tolist() == [0.0, 0.0]
    index = BM25Index([["one"], ["two"]])
    assert index.ranked(["one"], 0) == []
    assert len(index.ranked(["one"], 10)) == 2
    assert index.doc_freq("one") == 1 and index.doc_freq("three") == 0 and index.idf("three") == 0.0


def test_tokenizer_is_lowercased_word_regex() -> None:
    assert bm25_tokens("Hello, World! It's Caroline's 2023_plan; naïve CAFÉ") == [
        "hello",
        "world",
        "it",
        "s",
        "caroline",
        "s",
        "2023_plan",
        "naïve",
        "café",
    ]
    assert bm25_tokens("  ...  ") == []


def _state(semantic: list[str], episodic: list[str] = ()) -> MemoryState:
    state = MemoryState()
    for kind, contents in ((MemoryKind.SEMANTIC, semantic), (MemoryKind.EPISODIC, episodic)):
        for content in contents:
            state.items(kind).append(Item(f"i{state.next_item}", content, NOW, NOW))
            state.next_item += 1
            state.version += 1
    return state


def test_search_returns_items_per_kind_with_scores() -> None:
    state = _state(
        ["Caroline is a counselor.", "Melanie paints sunsets.", "Caroline likes hiking."],
        ["On 7 May 2023 Caroline went to a support group.", "Melanie ran a charity race."],
    )
    found = Retriever().search(state, "What does Caroline like?", k=2)
    assert set(found) == {MemoryKind.SEMANTIC, MemoryKind.EPISODIC}
    semantic = found[MemoryKind.SEMANTIC]
    assert [s.item.content for s in semantic] == ["Caroline likes hiking.", "Caroline is a counselor."]
    assert semantic[0].score > semantic[1].score > 0
    assert found[MemoryKind.EPISODIC][0].item.content.startswith("On 7 May 2023 Caroline")
    only_semantic = Retriever().search(state, "Melanie", k=5, kinds=[MemoryKind.SEMANTIC])
    assert list(only_semantic) == [MemoryKind.SEMANTIC] and len(only_semantic[MemoryKind.SEMANTIC]) == 3


def test_cache_hits_same_version_and_misses_on_change() -> None:
    retriever = Retriever(max_entries=8)
    state = _state(["alpha fact", "beta fact"], ["gamma event"])
    key = ("tenant", "session-1")
    retriever.search(state, "alpha", k=5, key=key)
    assert (retriever.cache_info().hits, retriever.cache_info().misses) == (0, 2)  # one index per kind
    retriever.search(state, "beta", k=5, key=key)
    assert (retriever.cache_info().hits, retriever.cache_info().misses) == (2, 2)

    state.semantic.append(Item("new1", "delta fact", NOW, NOW))
    state.version += 1
    found = retriever.search(state, "delta", k=1, key=key)
    assert found[MemoryKind.SEMANTIC][0].item.id == "new1"
    assert (retriever.cache_info().hits, retriever.cache_info().misses) == (2, 4)

    # Another session with the same version number has its own entries.
    other = _state(["alpha fact", "beta fact"], ["gamma event"])
    other.version = state.version
    retriever.search(other, "alpha", k=1, key=("tenant", "session-2"))
    assert retriever.cache_info().misses == 6


def test_cache_never_serves_a_stale_index_for_a_reused_version() -> None:
    # A recreated session (or a rollout reusing a key) can reach the same version with other items.
    retriever = Retriever()
    first = _state(["the cat sleeps"])
    assert (
        retriever.search(first, "cat", k=1, key="s")[MemoryKind.SEMANTIC][0].item.content == "the cat sleeps"
    )
    second = _state(["the dog barks"])
    assert second.version == first.version
    hit = retriever.search(second, "dog", k=1, key="s")[MemoryKind.SEMANTIC][0]
    assert hit.item.content == "the dog barks" and hit.score != 0


def test_cache_is_lru_bounded() -> None:
    retriever = Retriever(max_entries=2)
    states = [_state([f"fact number {n}"]) for n in range(3)]
    for n, state in enumerate(states):
        retriever.search(state, "fact", k=1, kinds=[MemoryKind.SEMANTIC], key=n)
    assert retriever.cache_info().size == 2
    retriever.search(states[2], "fact", k=1, kinds=[MemoryKind.SEMANTIC], key=2)
    assert retriever.cache_info().hits == 1
    retriever.search(states[0], "fact", k=1, kinds=[MemoryKind.SEMANTIC], key=0)  # evicted: rebuilt
    assert retriever.cache_info().misses == 4


def test_lucene_idf_is_positive_on_tiny_memories_where_okapi_inverts_the_ranking() -> None:
    docs = [bm25_tokens("Mira keeps bees on her roof."), bm25_tokens("Jonas repairs bicycles.")]
    query = bm25_tokens("Jonas bicycles")
    okapi, lucene = BM25Index(docs), BM25Index(docs, LUCENE)
    # rank-bm25 (kept bit-identical for the paper): with 2 items every idf is ln(1.5) - ln(1.5) = 0, so
    # nothing scores and the item that does not match ranks first (ties go by position).
    assert okapi.idf("jonas") == 0 and okapi.ranked(query, 1) == [(0, 0.0)]
    assert lucene.idf("jonas") > 0 and lucene.ranked(query, 2, matching=True) == [
        (1, lucene.scores(query)[1])
    ]


def test_stemmed_analyzer_meets_word_forms_and_drops_query_stopwords() -> None:
    retriever = Retriever(scorer="lucene")
    assert retriever.query_terms("What instrument does he play?") == ["instrument", "play"]
    assert retriever.scorer.analyzer.index_terms("He plays the cello") == ["he", "play", "the", "cello"]
    state = MemoryState(
        semantic=[
            Item("m1", "He plays the cello.", NOW, NOW),
            Item("m2", "The weather is the best.", NOW, NOW),
        ]
    )
    found = retriever.search(state, "Who played the cello?", k=5, matching=True)[MemoryKind.SEMANTIC]
    assert [hit.item.id for hit in found] == ["m1"]  # "the" no longer matches m2
    # A question made only of stopwords keeps them: there is nothing else to search for.
    assert retriever.query_terms("Who is he?") == ["who", "is", "he"]


def test_a_question_word_meets_the_compound_that_ends_in_it() -> None:
    state = MemoryState(
        semantic=[
            Item("m1", "During the spring he trained for the race.", NOW, NOW),
            Item("m2", "He sails his sailboat, the Kestrel.", NOW, NOW),
        ]
    )
    found = Retriever(scorer="lucene").search(state, "What is his boat called?", k=5, matching=True)
    assert [hit.item.id for hit in found[MemoryKind.SEMANTIC]] == ["m2"]
    # A short part or a short head is no compound: "ring" does not meet "during" or "spring".
    found = Retriever(scorer="lucene").search(state, "Which ring?", k=5, matching=True)
    assert found[MemoryKind.SEMANTIC] == []
    # The paper's scorer stays as it was (SPEC §4): plain words only.
    found = Retriever(scorer="okapi").search(state, "boat", k=5, matching=True)
    assert found[MemoryKind.SEMANTIC] == []


@given(word=st.text("ab", max_size=12), part=st.text("ab", max_size=12))
def test_compound_parts_are_exactly_the_parts_compound_of_accepts(word: str, part: str) -> None:
    # A two-letter alphabet makes suffix matches common, at every length around the bounds.
    assert (part in set(compound_parts(word))) == compound_of(word, part)


def test_partial_top_k_equals_the_full_sort_with_ties_by_position() -> None:
    rng = random.Random(7)
    words = ["bee", "hive", "honey", "wax", "queen", "drone"]
    # Few distinct documents, many copies: most scores tie, zeros included.
    docs = [rng.sample(words, rng.randint(0, 3)) for _ in range(300)]
    index = BM25Index(docs, LUCENE)
    for query in (["bee"], ["honey", "wax"], ["absent"], ["queen", "queen", "hive"]):
        score = index.scores(query)
        full = [(int(p), float(score[p])) for p in np.lexsort((np.arange(len(docs)), -score))]
        matching = set(index.matches(query).tolist())
        for k in (1, 2, 5, 17, 299, 300, 301):
            assert index.ranked(query, k) == full[:k]
            assert index.ranked(query, k, matching=True) == [hit for hit in full if hit[0] in matching][:k]


def test_cache_follows_a_copy_at_the_same_version_and_rebuilds_for_other_items() -> None:
    retriever = Retriever()
    state = _state(["the cat sleeps", "the dog barks"])
    retriever.search(state, "cat", k=1, key="s")
    copied = state.copy()  # another object, same items: the fingerprint is compared once, then a hit
    retriever.search(copied, "cat", k=1, key="s")
    retriever.search(copied, "dog", k=1, key="s")
    assert (retriever.cache_info().hits, retriever.cache_info().misses) == (4, 2)
