"""The service's memory cache brings a memory cached at an older version up to date from the rows
written since (`load_changes`): after any sequence of policy writes, manual inserts, edits, deletes
and core changes it must equal the memory read from scratch, on SQLite and Postgres."""

from __future__ import annotations

import random

import pytest
from store_helpers import running

from app.memory import MemoryKind, MemoryState
from app.service import ChunkIn, MemoryService
from app.service import reads as reads_module
from app.store.memory import load_state
from app.store.sessions import get_session

TENANT, SESSION = "t", "s"
KEY = (TENANT, SESSION)
WORDS = ["Alice", "Bob", "nurse", "Boston", "chess", "cats", "works", "plays", "owns", "three"]


async def _fresh(service: MemoryService) -> MemoryState:
    async with service.db.read() as session:
        row = await get_session(session, KEY)
        assert row is not None
        return await load_state(session, row)


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + "."


async def _step(service: MemoryService, rng: random.Random) -> None:
    state = await _fresh(service)
    kind = rng.choice([MemoryKind.SEMANTIC, MemoryKind.EPISODIC])
    items = state.items(kind)
    choice = rng.random()
    if choice < 0.25:  # the policy writes (the extractive policy inserts and updates items)
        outcome = await service.ingestion.ingest(TENANT, SESSION, [ChunkIn(_text(rng))], wait=True)
        assert outcome.complete
    elif choice < 0.5 or not items:
        await service.memory.insert_item(TENANT, SESSION, kind.value, _text(rng))
    elif choice < 0.7:
        await service.memory.update_item(TENANT, SESSION, kind.value, rng.choice(items).id, _text(rng))
    elif choice < 0.9:
        await service.memory.delete_item(TENANT, SESSION, kind.value, rng.choice(items).id)
    else:
        await service.memory.replace_core(TENANT, SESSION, _text(rng))


@pytest.mark.parametrize("seed", [0, 1])
async def test_a_cached_memory_brought_up_to_date_equals_one_read_from_scratch(
    store_url: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    async with running(store_url) as service:
        outcome = await service.ingestion.ingest(
            TENANT, SESSION, [ChunkIn(_text(rng)) for _ in range(3)], wait=True
        )
        assert outcome.complete
        await service.state(KEY)  # cached at this version
        full_loads = 0
        real_load = reads_module.load_state

        async def counted(*args: object) -> MemoryState:
            nonlocal full_loads
            full_loads += 1
            return await real_load(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(reads_module, "load_state", counted)
        for n in range(40):
            for _ in range(rng.randint(1, 3)):  # one or more versions between two reads
                await _step(service, rng)
            if n % 10 == 9:  # now and then, a memory emptied of one kind
                for item in (await _fresh(service)).episodic:
                    await service.memory.delete_item(TENANT, SESSION, "episodic", item.id)
            assert await service.state(KEY) == await _fresh(service)
        assert full_loads == 0  # every read after the first was brought up to date, not reloaded

        # A session deleted and created again under the same id is read from scratch.
        await service.sessions.delete_session(TENANT, SESSION)
        outcome = await service.ingestion.ingest(TENANT, SESSION, [ChunkIn("Dora paints houses.")], wait=True)
        assert outcome.complete
        assert await service.state(KEY) == await _fresh(service)
        assert full_loads == 1
