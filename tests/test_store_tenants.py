"""Tenants, API keys, the memory facade (edits, answers, search, export/import) and the policy
registry, at the service level on SQLite and Postgres."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from store_helpers import policy_ops_per_chunk, running, settle

from app.errors import BadRequest, Conflict, NotFound, Unauthorized
from app.memory import Operation, Tool
from app.service import ChunkIn, MemoryService

A, B = "tenant-a", "tenant-b"
FACTS = ["Alice works as a nurse in Boston.", "Bob plays chess with his uncle.", "Carol owns three cats."]


async def _fill(service: MemoryService, tenant: str, session_id: str) -> None:
    outcome = await service.ingestion.ingest(tenant, session_id, [ChunkIn(text) for text in FACTS], wait=True)
    assert outcome.complete and all(chunk.status == "done" for chunk in outcome.chunks)


async def test_another_tenants_session_is_not_found_everywhere(store_url: str) -> None:
    async with running(store_url) as service:
        await _fill(service, A, "shared-name")
        calls: dict[str, Any] = {
            "get_session": service.sessions.get_session(B, "shared-name"),
            "get_memory": service.memory.get_memory(B, "shared-name"),
            "list_chunks": service.sessions.list_chunks(B, "shared-name"),
            "list_operations": service.sessions.list_operations(B, "shared-name"),
            "answer": service.answers.answer(B, "shared-name", "Who is a nurse?", k=None),
            "search": service.answers.search(B, "shared-name", "nurse", k=None, memory_type=None),
            "edit": service.memory.edit_memory(
                B, "shared-name", Operation(Tool.UPDATE, "core", content="mine")
            ),
            "retry": service.ingestion.retry_chunk(B, "shared-name", 1),
            "export": service.exchange.export_session(B, "shared-name", include_chunks=True),
            "delete": service.sessions.delete_session(B, "shared-name"),
        }
        for name, call in calls.items():
            with pytest.raises(NotFound):
                await call
                pytest.fail(f"{name} reached another tenant's session")
        assert [s.id for s in await service.sessions.list_sessions(A)] == ["shared-name"]
        assert await service.sessions.list_sessions(B) == []
        # B's session of the same name is a separate one, with its own seqs and memory.
        outcome = await service.ingestion.ingest(
            B, "shared-name", [ChunkIn("Dave sails a boat on the lake.")], wait=True
        )
        assert outcome.chunks[0].seq == 1
        assert [i.content for i in (await service.memory.get_memory(B, "shared-name")).semantic] == [
            "Dave sails a boat on the lake."
        ]
        assert len((await service.memory.get_memory(A, "shared-name")).semantic) == 3
        await service.sessions.delete_session(B, "shared-name")
        assert len((await service.memory.get_memory(A, "shared-name")).semantic) == 3


async def test_keys_authenticate_their_tenant_until_revoked(store_url: str) -> None:
    from app.store import keys
    from app.store.types import utcnow

    bootstrap = "ma_bootstrap-key-for-tests-0123456789"
    async with running(store_url, bootstrap_api_key=SecretStr(bootstrap), bootstrap_tenant="ops") as service:
        assert await service.access.authenticate(bootstrap) == keys.Principal("ops", admin=True)
        key = await service.access.create_api_key(A)
        assert key.startswith("ma_") and await service.access.authenticate(key) == keys.Principal(
            A, admin=False
        )
        with pytest.raises(Unauthorized):
            await service.access.authenticate(key + "x")
        async with service.db.read() as db:
            [info] = await keys.list_keys(db, A)
        assert info.prefix == key[:10]
        async with service.db.write() as db:
            assert await keys.revoke(db, info.id, utcnow())
        with pytest.raises(Unauthorized):
            await service.access.authenticate(key)
    # A restart stores the bootstrap key again without duplicating it.
    async with (
        running(store_url, bootstrap_api_key=SecretStr(bootstrap), bootstrap_tenant="ops") as service,
        service.db.read() as db,
    ):
        assert len(await keys.list_keys(db, "ops")) == 1


async def test_manual_edits_use_the_applier_and_the_audit_log(store_url: str) -> None:
    async with running(store_url) as service:
        await _fill(service, A, "s")
        version = (await service.memory.get_memory(A, "s")).version
        core = await service.memory.edit_memory(
            A, "s", Operation(Tool.UPDATE, "core_memory", content="Three people.")
        )
        inserted = await service.memory.edit_memory(
            A, "s", Operation(Tool.INSERT, "episodic", content="At noon Bob won.")
        )
        assert (core.status, inserted.status, inserted.memory_type) == ("ok", "ok", "episodic")
        updated = await service.memory.edit_memory(
            A,
            "s",
            Operation(
                Tool.UPDATE, "episodic", content="At noon Bob lost.", memory_id=f"[{inserted.memory_id}]"
            ),
        )
        assert (updated.status, updated.content) == ("ok", "At noon Bob lost.")
        skipped = await service.memory.edit_memory(
            A, "s", Operation(Tool.INSERT, "semantic", content=FACTS[0])
        )
        assert skipped.status == "skipped"
        with pytest.raises(NotFound):
            await service.memory.edit_memory(A, "s", Operation(Tool.DELETE, "semantic", memory_id="zzzz"))
        with pytest.raises(BadRequest):
            await service.memory.edit_memory(
                A, "s", Operation(Tool.INSERT, "core", content="no inserts into core")
            )
        with pytest.raises(BadRequest):
            await service.memory.edit_memory(
                A, "s", Operation(Tool.INSERT, "procedural", content="unknown kind")
            )
        with pytest.raises(NotFound):
            await service.memory.edit_memory(A, "nope", Operation(Tool.UPDATE, "core", content="x"))
        deleted = await service.memory.edit_memory(
            A, "s", Operation(Tool.DELETE, "episodic", memory_id=inserted.memory_id)
        )
        assert (deleted.status, deleted.content) == ("ok", "At noon Bob lost.")
        memory = await service.memory.get_memory(A, "s")
        assert memory.core == "Three people." and memory.episodic == []
        assert memory.version == version + 4  # core, insert, update, delete; rejected edits bump nothing
        user_ops = [op for op in await service.sessions.list_operations(A, "s") if op.actor == "user"]
        assert [(op.tool, op.status, op.policy) for op in user_ops] == [
            ("memory_update", "ok", None),
            ("new_memory_insert", "ok", None),
            ("memory_update", "ok", None),
            ("new_memory_insert", "skipped", None),
            ("memory_delete", "ok", None),
        ]
        assert user_ops[2].before == "At noon Bob won." and user_ops[2].after == "At noon Bob lost."


async def test_answer_and_search_read_the_current_memory(store_url: str) -> None:
    async with running(store_url) as service:
        await _fill(service, A, "s")
        answer = await service.answers.answer(A, "s", "What does Bob play?", k=None)
        assert answer.answer == FACTS[1] and answer.model == "extractive"
        assert answer.memory_version == 3
        assert FACTS[1] in [e.content for e in answer.evidence.semantic]
        found = await service.answers.search(A, "s", "cats Carol", k=1, memory_type="semantic_memory")
        assert [hit.content for hit in found.semantic] == [FACTS[2]]
        assert found.model_fields_set == {"query", "memory_version", "semantic"}  # episodic not searched
        with pytest.raises(BadRequest):
            await service.answers.search(A, "s", "cats", k=None, memory_type="core")
        # An edit is visible to the next question (the cached memory is keyed by version).
        [bob] = (await service.answers.search(A, "s", "Bob chess", k=1, memory_type="semantic")).semantic
        await service.memory.edit_memory(
            A,
            "s",
            Operation(Tool.UPDATE, "semantic", content="Bob plays go with his uncle.", memory_id=bob.id),
        )
        assert (await service.answers.answer(A, "s", "What does Bob play?", k=None)).answer == (
            "Bob plays go with his uncle."
        )
        with pytest.raises(NotFound):
            await service.answers.answer(A, "missing", "anything?", k=None)


async def test_export_import_round_trip_and_import_needs_an_empty_session(store_url: str) -> None:
    async with running(store_url) as service:
        await _fill(service, A, "src")
        await service.memory.edit_memory(A, "src", Operation(Tool.UPDATE, "core", content="Three people."))
        exported = (await service.exchange.export_session(A, "src", include_chunks=True)).model_dump(
            mode="json"
        )
        result = await service.exchange.import_session(B, "copy", exported)
        assert result.imported == {"core": True, "semantic": 3, "episodic": 0, "chunks": 3}
        source, copy = await service.memory.get_memory(A, "src"), await service.memory.get_memory(B, "copy")
        assert copy == source
        assert [c.status for c in await service.sessions.list_chunks(B, "copy")] == ["done"] * 3
        assert {op.actor for op in await service.sessions.list_operations(B, "copy")} == {"import"}
        with pytest.raises(Conflict):
            await service.exchange.import_session(B, "copy", exported)
        # New ids continue the imported counter: no clash with imported ids.
        added = await service.memory.edit_memory(
            B, "copy", Operation(Tool.INSERT, "semantic", content="Dave sails a boat on the lake.")
        )
        assert added.memory_id not in {item.id for item in source.semantic}
        outcome = await service.ingestion.ingest(B, "copy", [ChunkIn("Erin rows.")], wait=True)
        assert outcome.chunks[0].seq == 4
        for bad in (
            {"format": "other"},
            {**exported, "memory": {**exported["memory"], "core": "x\x00"}},
        ):
            with pytest.raises(BadRequest):
                await service.exchange.import_session(B, "bad", bad)
        with pytest.raises(Conflict):  # a payload that contradicts itself (issue 14: 409, not 400)
            await service.exchange.import_session(
                B, "bad", {**exported, "chunks": exported["chunks"] + exported["chunks"][:1]}
            )
        assert [s.id for s in await service.sessions.list_sessions(B)] == ["copy"]


async def test_imported_pending_chunks_are_processed(store_url: str) -> None:
    payload = {
        "format": "memalpha.session.v1",
        "memory": {"core": "", "semantic": [{"id": "aaaa", "content": FACTS[0]}]},
        "chunks": [
            {"seq": 1, "content": FACTS[0], "status": "done"},
            {"seq": 2, "content": FACTS[1], "status": "pending"},
        ],
    }
    async with running(store_url) as service:
        await service.exchange.import_session(A, "s", payload)
        rows = await settle(service, A, "s")
        assert [row.status for row in rows] == ["done", "done"]
        assert [i.content for i in (await service.memory.get_memory(A, "s")).semantic] == FACTS[:2]
        assert await policy_ops_per_chunk(service, A, "s") == {2: 1}  # the imported done chunk is not redone


async def test_policy_registry_switches_without_restart(store_url: str) -> None:
    async with running(store_url) as service:
        assert (await service.policies.get_policy()).name == "extractive"
        registered = await service.policies.register_policy(
            "grpo-v1", "Qwen3-4B", "/adapters/v1", {"reward": 0.7}, {"chat_template": "abc"}
        )
        assert registered.active is False
        # Registering again is idempotent (a re-run publish); a name never means another base model.
        again = await service.policies.register_policy("grpo-v1", "Qwen3-4B", None, {}, {})
        assert (again.name, again.adapter_path) == ("grpo-v1", "/adapters/v1")
        with pytest.raises(Conflict):
            await service.policies.register_policy("grpo-v1", "Qwen3-8B", None, {}, {})
        switched = await service.policies.set_policy("grpo-v1")
        assert switched.active is True and (await service.policies.get_policy()).name == "grpo-v1"
        with pytest.raises(NotFound):
            await service.policies.set_policy("never-registered")
        # Chunks now record the active registry row as their policy.
        await service.ingestion.ingest(A, "s", [ChunkIn(FACTS[0])], wait=True)
        [op] = await service.sessions.list_operations(A, "s")
        assert (op.policy, op.model) == ("grpo-v1", "extractive")
        assert (await service.policies.set_policy("extractive")).name == "extractive"  # roll back
