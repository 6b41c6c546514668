"""The ingest worker reads a partial memory for a policy that shows recent items (issue 13): the recent
items, the count of the others, and at commit the older items the reply names. The result must be
the one of the whole memory: same prompt, same operation outcomes, same memory afterwards.

Each chunk's scripted reply is applied by the service and, independently, to a reference copy of the
whole memory with the same applier; the prompt each chunk was proposed on must show what
`render_policy_memory` renders from the whole memory.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from scripted_llm import Echo, ScriptedLLM, Text
from store_helpers import assert_exactly_once, openai_policy, running

from app.ingest.views import Views
from app.memory import Item, MemoryKind, MemoryState, item_id, render_policy_memory
from app.policy.parser import parse_reply
from app.service import ChunkIn, MemoryService
from app.store import sessions
from app.store.memory import load_state
from app.store.models import OperationLog, Session

T, S = "tenant-v", "big"
PER_KIND = 40  # well over the 5 recent items the prompt shows


def _call(name: str, **arguments: str) -> str:
    return f"✿FUNCTION✿: {name}\n✿ARGS✿: {json.dumps(arguments)}"


def _payload() -> dict[str, object]:
    now = datetime.now(UTC).isoformat()

    def rows(first: int, what: str) -> list[dict[str, str]]:
        return [
            {"id": item_id(n), "content": f"{what} number {n}.", "created_at": now, "updated_at": now}
            for n in range(first, first + PER_KIND)
        ]

    memory = {
        "core": "Ana keeps bees.",
        "version": 2 * PER_KIND,
        "next_item": 2 * PER_KIND,
        "semantic": rows(0, "Fact"),
        "episodic": rows(PER_KIND, "Event"),
    }
    return {"format": "memalpha.session.v1", "memory": memory}


async def _whole(service: MemoryService) -> MemoryState:
    async with service.db.read() as db:
        row = await sessions.get_session(db, (T, S))
        assert row is not None
        return await load_state(db, row)


async def _statuses(service: MemoryService, seq: int) -> list[str]:
    async with service.db.read() as db:
        rows = (await db.execute(OperationLog.__table__.select().where(OperationLog.chunk_seq == seq))).all()
    return [row.status for row in sorted(rows, key=lambda row: row.id)]


async def test_partial_view_gives_the_whole_memorys_prompt_outcomes_and_memory(store_url: str) -> None:
    oldest_semantic, oldest_episodic = item_id(0), item_id(PER_KIND)
    replies = [
        # Names items the prompt did not show: an update and a delete of old items, a duplicate of an
        # old item (skipped), and a new item.
        "\n".join(
            [
                _call(
                    "memory_update",
                    memory_type="semantic_memory",
                    memory_id=oldest_semantic,
                    new_content="Fact number 0, corrected.",
                ),
                _call("memory_delete", memory_type="episodic_memory", memory_id=oldest_episodic),
                _call("new_memory_insert", memory_type="semantic_memory", content="  Fact number 3. "),
                _call("new_memory_insert", memory_type="semantic_memory", content="A new fact."),
            ]
        ),
        # Deletes the newest item of each kind: the next prompt must show the item that moves up.
        "\n".join(
            [
                _call("memory_delete", memory_type="semantic_memory", memory_id=item_id(2 * PER_KIND)),
                _call("memory_delete", memory_type="episodic_memory", memory_id=item_id(2 * PER_KIND - 1)),
            ]
        ),
        None,  # echo: inserts the chunk as a semantic item (the kind is then full)
        None,  # echo again: the kind is full, counted with the items not loaded
        # An unknown id is an error, as on the whole memory.
        _call("memory_delete", memory_type="semantic_memory", memory_id="zzzz"),
    ]
    expected_statuses = [
        ["ok", "ok", "skipped", "ok"],
        ["ok", "ok"],
        ["ok"],
        ["error"],
        ["error"],
    ]
    with ScriptedLLM() as llm:
        overrides = openai_policy(llm, workers=1, max_items_per_kind=PER_KIND + 1)
        async with running(store_url, **overrides) as service:
            await service.exchange.import_session(T, S, _payload())
            reference = await _whole(service)
            for seq, reply in enumerate(replies, start=1):
                llm.script(Echo() if reply is None else Text(reply))
                chunk = f"Chunk {seq}: Ana bought {seq} new hives."
                shown = render_policy_memory(reference)
                outcome = await service.ingestion.ingest(T, S, [ChunkIn(chunk)], wait=True)
                assert outcome.chunks[0].status == "done"

                prompt = llm.requests[-1].body["messages"][0]["content"]
                assert shown in prompt  # the partial view rendered as the whole memory does
                text = reply if reply is not None else Echo().content(chunk)
                results = service.applier.apply_calls(
                    reference, parse_reply(text).calls, now=datetime.now(UTC), seq=seq
                )
                assert [r.status for r in results] == expected_statuses[seq - 1]
                assert await _statuses(service, seq) == expected_statuses[seq - 1]

                whole = await _whole(service)
                for kind in (MemoryKind.SEMANTIC, MemoryKind.EPISODIC):
                    assert [(i.id, i.content) for i in whole.items(kind)] == [
                        (i.id, i.content) for i in reference.items(kind)
                    ]
                assert (whole.core, whole.version, whole.next_item) == (
                    reference.core,
                    reference.version,
                    reference.next_item,
                )
            assert "showing the 5 most recent of 41 items" in llm.requests[-1].body["messages"][0]["content"]
            await assert_exactly_once(service, T, S)


def test_views_are_kept_per_session_version_and_bounded_by_items() -> None:
    now = datetime.now(UTC)

    def row(session: str, version: int, created: datetime = now) -> Session:
        return Session(tenant_id=T, id=session, version=version, created_at=created)

    def memory(items: int, version: int) -> MemoryState:
        return MemoryState(
            semantic=[Item(item_id(n), f"fact {n}", now, now) for n in range(items)], version=version
        )

    views = Views(max_items=25)
    views.put(row("a", 3), memory(10, 3))
    assert views.get(row("a", 3)) is not None
    assert views.get(row("a", 4)) is None  # another version: read again
    assert views.get(row("a", 3, now.replace(year=2000))) is None  # a recreated session
    views.put(row("b", 1), memory(10, 1))
    views.put(row("c", 1), memory(10, 1))  # 33 items kept > 25: the least recently used goes
    assert views.get(row("a", 3)) is None and views.get(row("b", 1)) is not None
    views.put(row("d", 1), memory(40, 1))  # larger than the bound alone: kept, every other goes
    assert views.get(row("d", 1)) is not None and views.get(row("b", 1)) is None
