"""Training and serving run one engine step: the same scripted policy replies, fed once through the
trainer's rollout path (`collect_group` → `run_episode` → `write_memory`) and once through the service's
ingest worker (real HTTP to the scripted model, real database), leave byte-identical memories."""

from __future__ import annotations

import json
from typing import Any

from conftest import service_settings
from scripted_llm import ScriptedLLM, Text
from store_helpers import openai_policy, running

from app.backends import make_policy
from app.memory import LIST_KINDS, MemoryState, item_id
from app.service import ChunkIn
from app.tokens import make_token_counter
from trainer.config import RewardConfig
from trainer.episodes import QA, Episode
from trainer.rewards import RewardWeights
from trainer.rollouts import collect_group, make_engine

CHUNKS = [
    "Ana moved to Lisbon in 2019 and works as a marine biologist.",
    "Ana adopted a grey cat called Miso.",
    "Ana's cat Miso is actually white, not grey.",
    "Ana no longer lives in Lisbon; she moved to Porto.",
    "Nothing new today.",
]


def _call(name: str, **arguments: str) -> str:
    return f"✿FUNCTION✿: {name}\n✿ARGS✿: {json.dumps(arguments, ensure_ascii=False)}"


# One reply per chunk: inserts, updates and deletes by id, a core rewrite, a duplicate (skipped), an
# unknown id and an unknown kind (errors), and an unparseable reply. Ids are assigned in insert order
# (item_id(n) is the n-th item of the session), so the replies can name them.
REPLIES = [
    "\n".join(
        [
            _call("memory_update", memory_type="core_memory", new_content="Ana: marine biologist, Lisbon."),
            _call(
                "new_memory_insert", memory_type="semantic_memory", content="Ana works as a marine biologist."
            ),
            _call("new_memory_insert", memory_type="episodic_memory", content="Ana moved to Lisbon in 2019."),
        ]
    ),
    "\n".join(
        [
            _call("new_memory_insert", memory_type="semantic_memory", content="Ana has a grey cat, Miso."),
            _call(
                "new_memory_insert", memory_type="semantic_memory", content="Ana works as a marine biologist."
            ),
            _call("new_memory_insert", memory_type="procedural_memory", content="Feed the cat."),
        ]
    ),
    "\n".join(
        [
            _call(
                "memory_update",
                memory_type="semantic_memory",
                memory_id=item_id(2),
                new_content="Miso is white.",
            ),
            _call("memory_delete", memory_type="semantic_memory", memory_id="zzzz"),
        ]
    ),
    "\n".join(
        [
            _call("memory_delete", memory_type="episodic_memory", memory_id=item_id(1)),
            _call("new_memory_insert", memory_type="episodic_memory", content="Ana moved to Porto."),
            _call("memory_update", memory_type="core_memory", new_content="Ana: marine biologist, Porto."),
        ]
    ),
    "I have nothing to add {{{ memory_insert(",
]


def _memory(state: MemoryState) -> bytes:
    """Everything the engine step decides (not the wall-clock write times)."""
    shape: dict[str, Any] = {
        "core": state.core,
        "core_truncated": state.core_truncated,
        "version": state.version,
        "next_item": state.next_item,
    }
    for kind in LIST_KINDS:
        shape[kind.value] = [
            [item.id, item.content, item.source_seq, item.occurred_at and item.occurred_at.isoformat()]
            for item in state.items(kind)
        ]
    return json.dumps(shape, ensure_ascii=False, sort_keys=True).encode()


async def test_trainer_rollout_and_worker_write_identical_memory(
    store_url: str, scripted_llm: ScriptedLLM
) -> None:
    overrides = openai_policy(scripted_llm, policy_tool_format="alpha", workers=1)
    settings = service_settings(store_url, **overrides)
    counter = make_token_counter(settings.tokenizer_file)

    scripted_llm.script(*(Text(reply) for reply in REPLIES))
    episode = Episode("parity", "squad", list(CHUNKS), [QA("Where does Ana live?", "Porto")])
    engine = make_engine(RewardConfig(), settings, counter)
    policy = make_policy(settings)
    try:
        group = await collect_group(episode, policy, engine, group_size=1, weights=RewardWeights())
    finally:
        await policy.aclose()
    trained = group.runs[0].state
    assert trained is not None
    statuses = [[r.status for r in step.results] for step in group.runs[0].steps]
    # The script exercises every outcome, so identical memories are not identical by emptiness.
    assert statuses == [["ok", "ok", "ok"], ["ok", "skipped", "error"], ["ok", "error"], ["ok"] * 3, []]

    # The service retries a reply without a parseable call (the rollout scores it as no operations):
    # given the same garbage on every attempt, that chunk ends `failed` with the same memory.
    attempts = 3
    scripted_llm.script(*(Text(reply) for reply in REPLIES), *[Text(REPLIES[-1])] * (attempts - 1))
    async with running(store_url, **overrides, chunk_max_attempts=attempts, retry_backoff_s=0.05) as service:
        outcome = await service.ingestion.ingest(
            "t", "parity", [ChunkIn(chunk) for chunk in CHUNKS], wait=True
        )
        assert outcome.complete
        assert [chunk.status for chunk in outcome.chunks] == ["done"] * (len(CHUNKS) - 1) + ["failed"]
        async with service.db.read() as db:
            from app.store.memory import load_state
            from app.store.sessions import get_session

            row = await get_session(db, ("t", "parity"))
            assert row is not None
            served = await load_state(db, row)

    assert _memory(served) == _memory(trained)
    assert [item.content for item in served.semantic] == [
        "Ana works as a marine biologist.",
        "Miso is white.",
    ]


async def test_event_times_come_from_the_chunk_in_both_paths() -> None:
    """The engine step stamps inserted episodic items with the chunk's time (only the worker did)."""
    from datetime import UTC, datetime

    from app.memory import Applier, MemoryLimits, WordTokenCounter
    from app.policy.parser import ToolCall

    applier = Applier(MemoryLimits(512, 200, 1000), WordTokenCounter())
    state = MemoryState()
    when = datetime(2023, 5, 8, tzinfo=UTC)
    calls = [
        ToolCall("new_memory_insert", {"memory_type": "episodic_memory", "content": "Alice adopted Toby."}),
        ToolCall("new_memory_insert", {"memory_type": "semantic_memory", "content": "Alice is a nurse."}),
    ]
    results = applier.apply_calls(state, calls, now=datetime.now(UTC), seq=7, occurred_at=when)
    assert [r.status for r in results] == ["ok", "ok"]
    assert state.episodic[0].occurred_at == when and state.episodic[0].source_seq == 7
    assert state.semantic[0].occurred_at is None
