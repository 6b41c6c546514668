"""Items' index-only cues (`Item.cues`): the optional tool argument, the store and export round trips,
budget-mode retrieval (and not top-k), the answer context that never shows them, and the extractive
writer that fills them from the question a reply answered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from store_helpers import running

from app.memory import (
    Applier,
    MemoryKind,
    MemoryLimits,
    MemoryState,
    Operation,
    Tool,
    WordTokenCounter,
    cues_for,
)
from app.policy.extractive import ExtractivePolicy
from app.qa import assemble_context
from app.retrieval import Retriever
from app.service import ChunkIn

NOW = datetime(2026, 1, 1, tzinfo=UTC)
COUNTER = WordTokenCounter()
APPLIER = Applier(MemoryLimits(max_item_tokens=20), COUNTER)
HIKING = "Melanie takes the kids hiking in the mountains near the lake."
DIALOGUE = (
    "[8 May 2023] Caroline: What do you do on weekends with your kids?\n"
    "[8 May 2023] Melanie: I take the kids hiking in the mountains near the lake.\n"
    "[8 May 2023] Caroline: Cool."
)


def _insert(state: MemoryState, cues: object, content: str = HIKING) -> Any:
    return APPLIER.apply(state, Operation(Tool.INSERT, "semantic", content=content, cues=cues), now=NOW)


# --- operations ---


def test_an_insert_keeps_its_cues_and_a_call_without_them_has_none() -> None:
    state = MemoryState()
    assert _insert(state, "  weekends \n kids ").status == "ok"
    assert state.semantic[0].cues == "weekends kids"
    call = Operation.from_call(Tool.INSERT, {"memory_type": "semantic_memory", "content": "Bob rows."})
    assert APPLIER.apply(state, call, now=NOW).status == "ok"
    assert state.semantic[1].cues == ""
    assert state.copy().semantic[0].cues == "weekends kids"
    assert state.trimmed(1).semantic[0].cues == ""


@pytest.mark.parametrize("bad", [7, ["weekends"], " ".join(["word"] * 21)])
def test_bad_cues_are_an_error_and_change_nothing(bad: object) -> None:
    state = MemoryState()
    _insert(state, "weekends")
    before = state.copy()
    result = _insert(state, bad, content="Bob rows on the river.")
    assert result.status == "error" and "cues" in (result.error or "")
    update = APPLIER.apply(
        state,
        Operation(
            Tool.UPDATE, "semantic", content="Melanie hikes.", memory_id=state.semantic[0].id, cues=bad
        ),
        now=NOW,
    )
    assert update.status == "error" and "cues" in (update.error or "")
    assert state == before


def test_an_update_sets_its_own_cues_or_clears_them() -> None:
    state = MemoryState()
    _insert(state, "weekends")
    item = state.semantic[0]

    def update(content: str, cues: object = None) -> str:
        op = Operation(Tool.UPDATE, "semantic", content=content, memory_id=item.id, cues=cues)
        return APPLIER.apply(state, op, now=NOW).status

    assert update(HIKING) == "skipped" and item.cues == "weekends"  # same content, no cues: nothing new
    assert update(HIKING, "saturdays") == "ok" and item.cues == "saturdays"
    assert update(HIKING, "saturdays") == "skipped"
    assert update("Melanie hikes with her kids.") == "ok" and item.cues == ""  # new content: stale cues go


def test_cues_are_the_question_words_the_content_lacks() -> None:
    assert cues_for("What do you do on weekends with your kids?", HIKING) == "weekends"
    # "hikes" is indexed as "hiking" is (one stem); "weekend" repeats "weekends"'s stem: once.
    assert cues_for("Which hikes, weekends and weekend trips?", HIKING) == "weekends trips"
    assert cues_for("Is it the lake?", HIKING) == ""


# --- retrieval and rendering ---


def test_cues_match_in_budget_mode_only_and_are_never_shown() -> None:
    state = MemoryState()
    _insert(state, "weekends")
    _insert(state, "", content="Bob rows on the river every morning.")
    retriever = Retriever(scorer="lucene")
    question = "What happens on weekends?"

    def shown(mode: str) -> list[str]:
        context = assemble_context(
            state,
            question,
            retriever=retriever,
            k=5,
            budget_tokens=400,
            counter=COUNTER,
            mode=mode,  # type: ignore[arg-type]
        )
        assert "weekends" not in context.rendered().replace(question, "")
        return [scored.item.content for scored in context.semantic if scored.score > 0]

    plain = MemoryState()
    _insert(plain, None)
    _insert(plain, None, content="Bob rows on the river every morning.")
    assert shown("budget") == [HIKING]
    assert shown("top-k") == []  # SPEC §4: contents only
    assert retriever.search(state, "weekends", 5)[MemoryKind.SEMANTIC][0].score == 0.0
    # Top-k ranks exactly as without cues.
    top = retriever.search(state, "Melanie kids", 5)[MemoryKind.SEMANTIC]
    same = Retriever(scorer="lucene").search(plain, "Melanie kids", 5)[MemoryKind.SEMANTIC]
    assert [(s.item.id, s.score) for s in top] == [(s.item.id, s.score) for s in same]


# --- the extractive writer ---


def test_the_extractive_writer_fills_cues_from_the_asking_question() -> None:
    calls = ExtractivePolicy(COUNTER).plan(MemoryState(), DIALOGUE)
    inserts = [call.arguments for call in calls if call.name == Tool.INSERT]
    assert inserts == [{"memory_type": "semantic_memory", "content": HIKING, "cues": "weekends"}]
    # A statement that asks nothing carries no cues.
    lone = ExtractivePolicy(COUNTER).plan(MemoryState(), "[8 May 2023] Melanie: I take the kids hiking.")
    assert all("cues" not in call.arguments for call in lone)


# --- store, API view and export, on SQLite and Postgres ---


async def test_cues_round_trip_through_the_store_and_the_export(store_url: str) -> None:
    async with running(store_url) as service:
        outcome = await service.ingestion.ingest("t", "s", [ChunkIn(DIALOGUE)], wait=True)
        assert outcome.complete
        await service.memory.edit_memory(
            "t", "s", Operation(Tool.INSERT, "episodic", content="Bob rowed the river.", cues="boat")
        )
        exported = (await service.exchange.export_session("t", "s", include_chunks=False)).model_dump(
            mode="json"
        )
    async with running(store_url) as service:  # a fresh service: the memory comes from the database
        memory = await service.memory.get_memory("t", "s")
        assert [(i.content, i.cues) for i in memory.semantic] == [(HIKING, "weekends")]
        assert [(i.content, i.cues) for i in memory.episodic] == [("Bob rowed the river.", "boat")]
        assert memory.tokens.cues == COUNTER.count("weekends") + COUNTER.count("boat")
        assert memory.tokens.total == memory.tokens.core + memory.tokens.semantic + memory.tokens.episodic
        # An edit written as a diff of the stored row updates its cues column too (here: clears it).
        item = memory.semantic[0]
        await service.memory.edit_memory(
            "t", "s", Operation(Tool.UPDATE, "semantic", content="Melanie hikes.", memory_id=item.id)
        )
        assert exported["memory"]["semantic"][0]["cues"] == "weekends"
        await service.exchange.import_session("t", "copy", exported)
        copy = await service.memory.get_memory("t", "copy")
        assert [(i.content, i.cues) for i in copy.semantic] == [(HIKING, "weekends")]
        old = {**exported, "memory": {**exported["memory"]}}
        for kind in ("semantic", "episodic"):
            old["memory"][kind] = [
                {k: v for k, v in i.items() if k != "cues"} for i in exported["memory"][kind]
            ]
        await service.exchange.import_session("t", "old", old)
        assert [i.cues for i in (await service.memory.get_memory("t", "old")).semantic] == [""]
    async with running(store_url) as service:
        assert [(i.content, i.cues) for i in (await service.memory.get_memory("t", "s")).semantic] == [
            ("Melanie hikes.", "")
        ]
