"""The budget-filled answer context reads the ranking lazily (`Retriever.matching`, batches that grow):
it must answer exactly what ranking every match up front answered, for any memory, question, cap and
budget. The reference below is the eager algorithm the lazy one replaced (every match ranked, wrapped
and sorted; episodic order from a map of every item's position), and it charges each item what the
rendered prompt really grows by: the lazy loop's cost of an item (its text, number, line) must be exact,
so it fills the budget as far as the matches allow."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from app.memory import LIST_KINDS, Item, MemoryKind, MemoryState, WordTokenCounter
from app.qa import assemble_context
from app.qa.context import _MAX_SKIPS, AnswerContext, _measured
from app.retrieval import Retriever, ScoredItem, bm25_tokens

NOW = datetime(2024, 1, 1, tzinfo=UTC)
COUNTER = WordTokenCounter()
# Few words: most items share one with the question, scores tie often and duplicates occur.
WORDS = ["bee", "hive", "honey", "wax", "queen", "drone", "the", "sting"]

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
# A memory's events all open with a date, in time order as a writer reading the stream stores them, or
# none does, so that the budget loop charges day lines (budget mode writes one per day). Otherwise a day
# can open twice (a "No date:" line between dated runs, a day again after a later one), which the loop
# does not foresee: the final check keeps such a context within the budget (`test_mixed_dates_stay_within_budget`).
DAYS = ["On 1 May 2023, ", "On 2 May 2023, ", "[3 May 2023] "]
dated_event = st.tuples(st.sampled_from(DAYS), texts).map("".join)
in_time_order = st.lists(st.tuples(st.integers(0, len(DAYS) - 1), texts), max_size=60).map(
    lambda events: [DAYS[day] + text for day, text in sorted(events, key=lambda event: event[0])]
)
memories = st.tuples(
    st.lists(texts, max_size=60),
    st.lists(texts, max_size=60) | in_time_order,
)


def _state(semantic: list[str], episodic: list[str]) -> MemoryState:
    state = MemoryState(core="bees")
    for kind, contents in ((MemoryKind.SEMANTIC, semantic), (MemoryKind.EPISODIC, episodic)):
        for content in contents:
            state.items(kind).append(Item(f"i{state.next_item}", content, NOW, NOW))
            state.next_item += 1
    state.version = state.next_item
    return state


def _eager(
    state: MemoryState, question: str, retriever: Retriever, k: int | None, budget: int
) -> AnswerContext:
    """What the context held before the lazy ranking (the same loop over a fully sorted list)."""
    draft = assemble_context(
        state, question, retriever=retriever, k=0, budget_tokens=budget, counter=COUNTER, mode="top-k"
    )
    draft = replace(draft, semantic=[], episodic=[], by_day=True)  # budget mode: a date line per day
    cap = k if k is not None else max(len(state.semantic), len(state.episodic))
    found = retriever.search(state, question, cap, LIST_KINDS, matching=True)
    candidates = sorted(
        ((scored, kind) for kind in LIST_KINDS for scored in found[kind]), key=lambda pair: -pair[0].score
    )
    position = {item.id: n for n, item in enumerate(state.episodic)}

    def measured(taken: list[tuple[ScoredItem, MemoryKind]]) -> AnswerContext:
        semantic = [s for s, kind in taken if kind is MemoryKind.SEMANTIC]
        episodic = sorted(
            (s for s, kind in taken if kind is MemoryKind.EPISODIC), key=lambda s: position[s.item.id]
        )
        return _measured(replace(draft, semantic=semantic, episodic=episodic), COUNTER)

    context = measured([])
    taken: list[tuple[ScoredItem, MemoryKind]] = []
    seen: set[str] = set()
    skips = 0
    for scored, kind in candidates:
        text = " ".join(bm25_tokens(scored.item.content))
        if text in seen:
            continue
        grown = measured([*taken, (scored, kind)])
        if grown.tokens > budget:
            skips += 1
            if skips >= _MAX_SKIPS:
                break
            continue
        skips = 0
        seen.add(text)
        taken.append((scored, kind))
        context = grown
    return context


@settings(max_examples=300, deadline=None)
@given(
    memory=memories,
    question=texts,
    k=st.none() | st.integers(0, 70),
    budget=st.integers(0, 400),
    scorer=st.sampled_from(["okapi", "lucene"]),
)
def test_lazy_budget_context_equals_the_eager_one(
    memory: tuple[list[str], list[str]], question: str, k: int | None, budget: int, scorer: str
) -> None:
    state = _state(*memory)
    retriever = Retriever(scorer=scorer)  # type: ignore[arg-type]
    lazy = assemble_context(
        state, question, retriever=retriever, k=k, budget_tokens=budget, counter=COUNTER, mode="budget"
    )
    assert lazy == _eager(state, question, retriever, k, budget)


@settings(max_examples=300, deadline=None)
@given(
    memory=memories,
    question=texts,
    limit=st.none() | st.integers(0, 70),
    batch=st.integers(1, 9),
    scorer=st.sampled_from(["okapi", "lucene"]),
)
def test_matching_in_batches_equals_one_ranking(
    memory: tuple[list[str], list[str]], question: str, limit: int | None, batch: int, scorer: str
) -> None:
    state = _state(*memory)
    retriever = Retriever(scorer=scorer)  # type: ignore[arg-type]
    terms = retriever.query_terms(question)
    for kind in LIST_KINDS:
        k = len(state.items(kind)) if limit is None else limit
        expected = retriever.search(state, question, k, (kind,), matching=True)[kind]
        streamed = list(retriever.matching(state, terms, kind, limit=limit, batch=batch))
        assert [scored for _, scored in streamed] == expected
        assert all(state.items(kind)[position] is scored.item for position, scored in streamed)


@settings(max_examples=200, deadline=None)
@given(
    semantic=st.lists(texts, max_size=30),
    episodic=st.lists(dated_event | texts, max_size=30),
    question=texts,
    budget=st.integers(0, 400),
)
def test_mixed_dates_stay_within_budget(
    semantic: list[str], episodic: list[str], question: str, budget: int
) -> None:
    context = assemble_context(
        _state(semantic, episodic),
        question,
        retriever=Retriever(),
        k=None,
        budget_tokens=budget,
        counter=COUNTER,
        mode="budget",
    )
    assert context.tokens <= budget or not (context.semantic or context.episodic)
