"""Answering from memory: context rendering, budget shrinking, the extractive answerer, and the openai
answerer against the real local LLM server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.errors import Unavailable
from app.memory import Applier, Item, MemoryLimits, MemoryState, Operation, WordTokenCounter
from app.qa import (
    ANSWER_SYSTEM_PROMPT,
    NO_INFORMATION,
    AnswerContext,
    ContextMode,
    ExtractiveAnswerer,
    OpenAIAnswerer,
    answer_question,
    assemble_context,
)
from app.qa.context import day_line
from app.qa.prompt import prompt_tokens
from app.retrieval import Retriever

NOW = datetime(2024, 1, 1, tzinfo=UTC)
COUNTER = WordTokenCounter()


def _memory(core: str, semantic: list[str], episodic: list[str]) -> MemoryState:
    state = MemoryState()
    applier = Applier(MemoryLimits(), COUNTER)
    if core:
        assert applier.apply(state, Operation("memory_update", "core_memory", core), now=NOW).status == "ok"
    for kind, contents in (("semantic_memory", semantic), ("episodic_memory", episodic)):
        for content in contents:
            assert applier.apply(state, Operation("new_memory_insert", kind, content), now=NOW).status == "ok"
    return state


CAROLINE = _memory(
    "Caroline and Melanie are friends who talk about their lives.",
    [
        "Caroline is a transgender woman.",
        "Caroline wants to work as a counselor. She is researching adoption agencies.",
        "Melanie has two kids and loves painting.",
    ],
    [
        "[1:56 pm on 8 May, 2023] Caroline went to an LGBTQ support group on 7 May 2023.",
        "[1:14 pm on 25 May, 2023] Melanie ran a charity race for mental health.",
    ],
)


async def test_extractive_answer_is_the_best_supported_sentence_with_evidence() -> None:
    result = await answer_question(
        CAROLINE,
        "What is Caroline researching?",
        retriever=Retriever(),
        answerer=ExtractiveAnswerer(),
        k=20,
        budget_tokens=30_000,
        counter=COUNTER,
    )
    assert result.answer == "She is researching adoption agencies."
    assert result.model == "extractive" and result.usage == {}
    assert result.core == CAROLINE.core
    assert result.k == 20 and len(result.semantic) == 3 and len(result.episodic) == 2
    assert result.semantic[0].content.startswith("Caroline wants to work")  # BM25 top item
    assert result.semantic[0].id == CAROLINE.semantic[1].id
    assert result.semantic[0].score >= result.semantic[1].score
    assert result.latency_s > 0 and result.context_tokens > 0


async def test_extractive_answer_picks_dated_event_and_is_deterministic() -> None:
    answers = {
        (
            await answer_question(
                CAROLINE,
                "When did Caroline go to the LGBTQ support group?",
                retriever=Retriever(),
                answerer=ExtractiveAnswerer(),
                k=20,
                budget_tokens=30_000,
                counter=COUNTER,
            )
        ).answer
        for _ in range(3)
    }
    assert answers == {"7 May 2023"}  # a "when" question gets the date out of the best sentence


async def test_a_when_question_is_answered_from_a_dated_sentence_when_one_has_support() -> None:
    state = _memory(
        "",
        ["Her name is Shadow and Maria adopted her as a puppy!"],  # matches more words, has no date
        ["On 13 August 2023, Maria adopted Shadow last week (the week before 13 August 2023)."],
    )
    answers = [
        (
            await answer_question(
                state,
                question,
                retriever=Retriever(scorer="lucene"),
                answerer=ExtractiveAnswerer(),
                k=None,
                budget_tokens=1000,
                counter=COUNTER,
                mode="budget",
            )
        ).answer
        for question in ("When did Maria adopt Shadow as a puppy?", "Who did Maria adopt as a puppy?")
    ]
    assert answers == ["13 August 2023", "Her name is Shadow and Maria adopted her as a puppy!"]


async def test_extractive_answer_says_when_memory_has_nothing() -> None:
    for state in (CAROLINE, MemoryState()):
        result = await answer_question(
            state,
            "Which volcano erupted?",
            retriever=Retriever(),
            answerer=ExtractiveAnswerer(),
            k=20,
            budget_tokens=30_000,
            counter=COUNTER,
        )
        assert result.answer == NO_INFORMATION


def test_context_rendering_numbers_items_without_ids() -> None:
    context = assemble_context(
        CAROLINE, "What does Melanie love?", retriever=Retriever(), k=2, budget_tokens=30_000, counter=COUNTER
    )
    text = context.rendered()
    assert text.startswith("Core memory:\nCaroline and Melanie are friends")
    assert "Semantic memory:\n1. Melanie has two kids and loves painting.\n2. " in text
    assert "Episodic memory:\n1. " in text and "\n3. " not in text  # k = 2 per kind
    assert all(item.id not in text for item in [*CAROLINE.semantic, *CAROLINE.episodic])
    system, user = context.messages()
    assert system == {"role": "system", "content": ANSWER_SYSTEM_PROMPT}
    assert user["role"] == "user" and user["content"].endswith("Question: What does Melanie love?")
    assert text in user["content"]
    # Task hints travel inside the question.
    hinted = assemble_context(
        CAROLINE,
        "Classify it. Answer as \\boxed{label}.",
        retriever=Retriever(),
        k=1,
        budget_tokens=30_000,
        counter=COUNTER,
    )
    assert hinted.messages()[1]["content"].endswith("Answer as \\boxed{label}.")


def test_budget_shrinks_k_to_the_largest_that_fits() -> None:
    filler = " ".join(f"word{n}" for n in range(30))
    state = _memory(
        "core",
        [f"fact {n} about apples {filler}" for n in range(25)],
        [f"event {n} with apples {filler}" for n in range(25)],
    )
    retriever = Retriever()

    def context(k: int, budget: int):
        return assemble_context(
            state, "apples?", retriever=retriever, k=k, budget_tokens=budget, counter=COUNTER
        )

    full = context(20, 100_000)
    assert full.k == 20 and len(full.semantic) == len(full.episodic) == 20
    assert full.tokens == prompt_tokens(full.messages(), COUNTER)

    budget = context(7, 100_000).tokens + 10  # room for 7 per kind, not for 8
    assert context(8, 100_000).tokens > budget
    shrunk = context(20, budget)
    assert shrunk.k == 7 and len(shrunk.semantic) == len(shrunk.episodic) == 7
    assert shrunk.tokens <= budget
    assert [s.item.id for s in shrunk.semantic] == [s.item.id for s in full.semantic[:7]]

    core_only = context(20, 1)  # not even core + question fit: nothing retrieved is shown
    assert core_only.k == 0 and core_only.semantic == [] and core_only.episodic == []


async def test_answer_result_reports_the_evidence_that_was_shown() -> None:
    state = _memory("", [f"apples fact {n} " + "pad " * 40 for n in range(10)], [])
    result = await answer_question(
        state,
        "apples",
        retriever=Retriever(),
        answerer=ExtractiveAnswerer(),
        k=20,
        budget_tokens=300,
        counter=COUNTER,
    )
    assert 0 < result.k < 10 and len(result.semantic) == result.k and result.context_tokens <= 300


async def test_openai_answerer_reports_an_unreachable_server_as_unavailable() -> None:
    answerer = OpenAIAnswerer(base_url="http://127.0.0.1:9/v1", model="nobody", timeout_s=5, max_retries=0)
    try:
        with pytest.raises(Unavailable, match="answering model 'nobody' failed"):
            await answer_question(
                CAROLINE,
                "Who?",
                retriever=Retriever(),
                answerer=answerer,
                k=5,
                budget_tokens=1000,
                counter=COUNTER,
            )
    finally:
        await answerer.aclose()


@pytest.fixture(scope="module")
def local_llm() -> tuple[str, str]:
    from tests.llm_server import LocalLLMError, ensure_local_llm, must_not_skip, served_model_name

    try:
        return ensure_local_llm(), served_model_name()
    except LocalLLMError as error:
        if must_not_skip():
            raise
        pytest.skip(f"local LLM server unavailable: {error}")


@pytest.mark.llm
async def test_openai_answerer_answers_from_memory_with_the_local_model(local_llm: tuple[str, str]) -> None:
    url, model = local_llm
    answerer = OpenAIAnswerer(base_url=url, model=model, timeout_s=300, max_tokens=48)
    try:
        result = await answer_question(
            CAROLINE,
            "How many kids does Melanie have?",
            retriever=Retriever(),
            answerer=answerer,
            k=20,
            budget_tokens=3000,
            counter=COUNTER,
        )
    finally:
        await answerer.aclose()
    assert result.model == model
    assert result.usage["prompt_tokens"] > 0 and 0 < result.usage["completion_tokens"] <= 48
    assert result.answer and "<think>" not in result.answer
    assert "two" in result.answer.lower() or "2" in result.answer


def test_budget_mode_fills_by_score_across_kinds_collapses_duplicates_and_orders_events() -> None:
    state = _memory(
        "core",
        ["Apples grow on trees.", "apples grow on TREES", "Pears are sweet.", "Apple pie needs apples."],
        ["Ann picked apples on 2 May.", "Ann baked on 1 May.", "Ann sold apples on 3 May."],
    )
    retriever = Retriever(scorer="lucene")

    def context(budget: int):
        return assemble_context(
            state,
            "apples?",
            retriever=retriever,
            k=None,
            budget_tokens=budget,
            counter=COUNTER,
            mode="budget",
        )

    full = context(10_000)
    shown = [s.item.content for s in full.semantic] + [s.item.content for s in full.episodic]
    # Only items that match, one of the two duplicates, and events in the order they were written.
    assert "Pears are sweet." not in shown and "Ann baked on 1 May." not in shown
    assert sum(content.lower() == "apples grow on trees." for content in shown) == 1
    assert [s.item.content for s in full.episodic] == [
        "Ann picked apples on 2 May.",
        "Ann sold apples on 3 May.",
    ]
    assert full.semantic == sorted(full.semantic, key=lambda s: -s.score)
    # A smaller budget keeps the best-scored items and stays within the budget.
    base = context(0).tokens
    small = context(base + 12)
    assert small.tokens <= base + 12 and 0 < len(small.semantic) + len(small.episodic) < len(shown)
    best = max((s for s in full.semantic + full.episodic), key=lambda s: s.score)
    assert best.item.id in {s.item.id for s in small.semantic + small.episodic}


def test_budget_mode_writes_one_date_line_per_day_and_top_k_mode_dates_every_item() -> None:
    state = _memory(
        "",
        [],
        [
            "On 8 May 2023, Ann picked apples.",
            "On 8 May 2023, Ann sold apples at the market.",
            "[9 May 2023] Ann baked apples into a pie.",
            "Ann gave apples away.",
        ],
    )

    def context(mode: ContextMode) -> AnswerContext:
        return assemble_context(
            state, "apples?", retriever=Retriever(), k=4, budget_tokens=10_000, counter=COUNTER, mode=mode
        )

    budget = context("budget")
    assert budget.rendered().endswith(
        "Episodic memory:\n8 May 2023:\n1. Ann picked apples.\n2. Ann sold apples at the market.\n"
        "9 May 2023:\n3. Ann baked apples into a pie.\nNo date:\n4. Ann gave apples away."
    )
    assert budget.tokens == prompt_tokens(budget.messages(), COUNTER)
    # SPEC §4's top-k form (the trainer's reward reads it) keeps every item's own text, by score.
    top_k = context("top-k").rendered()
    assert ". On 8 May 2023, Ann picked apples.\n" in top_k and "8 May 2023:" not in top_k


def test_day_line_takes_the_leading_date_else_the_event_time() -> None:
    at = datetime(2023, 5, 7, 13, 56, tzinfo=UTC)
    assert day_line(Item("a", "On 8 May 2023, Ann ran.", NOW, NOW, occurred_at=at)) == (
        "8 May 2023",
        "Ann ran.",
    )
    assert day_line(Item("b", "Ann ran on 8 May 2023.", NOW, NOW, occurred_at=at)) == (
        "7 May 2023",
        "Ann ran on 8 May 2023.",
    )
    assert day_line(Item("c", "Ann ran.", NOW, NOW)) == (None, "Ann ran.")
