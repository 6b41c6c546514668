"""Manual edits while the policy runs (issue 14): an editor writes every second while each chunk
spends 2 s with the policy, so every commit meets a memory version it did not propose on. Replies
that touch nothing the edits changed are applied on the edited memory (`app/ingest/edits.py`): every
chunk ends `done` on its first attempt, and no edit is lost. On SQLite and Postgres, real HTTP policy."""

from __future__ import annotations

import asyncio
import contextlib

from scripted_llm import Delay, Echo, ScriptedLLM
from store_helpers import assert_exactly_once, chunk_rows, openai_policy, running, settle

from app.service import ChunkIn

T = "tenant-e"
POLICY_S, EDIT_EVERY_S = 2.0, 1.0


async def test_an_editor_every_second_against_a_2s_policy_fails_no_chunk_and_loses_no_edit(
    store_url: str,
) -> None:
    texts = [f"Note {n}: Ana keeps {n} jars of honey in the attic." for n in range(1, 5)]
    inserted: list[str] = []
    cores: list[str] = []
    with ScriptedLLM(default=Delay(POLICY_S, Echo())) as llm:
        overrides = openai_policy(llm, workers=1, poll_interval_s=0.05, policy_timeout_s=10.0)
        async with running(store_url, **overrides) as service:
            # Stopped between writes, never cancelled inside one: a write cancelled after its commit
            # was sent would be in memory but not in `inserted`.
            stop = asyncio.Event()

            async def editor() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    if n % 2:
                        text = f"Edit {n}: Ana called the beekeeper."
                        await service.memory.insert_item(T, "s", "episodic", text)
                        inserted.append(text)
                    else:
                        cores.append(f"Ana, beekeeper; edit {n}.")
                        await service.memory.replace_core(T, "s", cores[-1])
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), EDIT_EVERY_S)

            await service.ingestion.ingest(T, "s", [ChunkIn(text) for text in texts], wait=False)
            editing = asyncio.create_task(editor())
            try:
                await settle(service, T, "s", timeout=60.0)
            finally:
                stop.set()
                await editing

            rows = await chunk_rows(service, T, "s")
            assert [(row.status, row.attempts) for row in rows] == [("done", 1)] * len(texts)
            memory = await service.memory.get_memory(T, "s")
            assert [item.content for item in memory.semantic] == texts
            assert [item.content for item in memory.episodic] == inserted
            assert memory.core == cores[-1]
            await assert_exactly_once(service, T, "s")
    # The edits really raced the policy: more of them than chunks, during the chunks' policy calls.
    assert len(inserted) + len(cores) > len(texts)
