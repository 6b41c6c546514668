"""Ingestion under failure: dead workers' leases, stolen leases, concurrent manual edits, policy
endpoints that fail (500, timeout, garbage, 4xx), graceful stop, and two worker processes on one
Postgres database. The policy is the real `openai` backend against the scripted HTTP server."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from datetime import timedelta

import pytest
from scripted_llm import Behaviour, Delay, Garbage, ScriptedLLM, Status
from sqlalchemy import update
from store_helpers import assert_exactly_once, chunk_rows, openai_policy, running, settle, until

from app.errors import Conflict, NotFound
from app.memory import Operation, Tool
from app.service import ChunkIn, MemoryService
from app.store.models import Chunk, Session
from app.store.types import utcnow

T = "tenant-r"


def fact(n: int) -> str:
    return f"Fact {n}: Zorg{n} owns {n} red boats."


async def _set(
    service: MemoryService,
    session_id: str,
    *,
    chunk: dict[int, dict[str, object]] | None = None,
    **session_values: object,
) -> None:
    """Write rows the way a (dead or rival) worker would have left them."""
    async with service.db.write() as db:
        for seq, values in (chunk or {}).items():
            await db.execute(
                update(Chunk)
                .where(Chunk.tenant_id == T, Chunk.session_id == session_id, Chunk.seq == seq)
                .values(**values)
            )
        if session_values:
            await db.execute(
                update(Session)
                .where(Session.tenant_id == T, Session.id == session_id)
                .values(**session_values)
            )


async def test_dead_workers_lease_expires_and_its_chunk_is_redone_once(store_url: str) -> None:
    async with running(store_url, run_workers=False) as service:
        await service.ingestion.ingest(T, "s", [ChunkIn(fact(1)), ChunkIn(fact(2))], wait=False)
        expires = utcnow() + timedelta(seconds=1)
        # A worker died after starting chunk 1: processing, one attempt counted, lease still held.
        await _set(
            service,
            "s",
            chunk={1: {"status": "processing", "attempts": 1, "started_at": utcnow()}},
            lease_owner="dead-host:1:00:0",
            lease_until=expires,
        )
    async with running(store_url) as service:
        rows = await settle(service, T, "s")
        assert [row.status for row in rows] == ["done", "done"]
        assert rows[0].attempts == 2 and rows[0].done_at is not None and rows[0].done_at >= expires
        await assert_exactly_once(service, T, "s")
        assert len((await service.memory.get_memory(T, "s")).semantic) == 2


async def test_chunk_whose_last_attempt_died_fails_and_blocks_until_retried(store_url: str) -> None:
    async with running(store_url, run_workers=False) as service:
        await service.ingestion.ingest(T, "s", [ChunkIn(fact(1)), ChunkIn(fact(2))], wait=False)
        await _set(
            service,
            "s",
            chunk={1: {"status": "processing", "attempts": 3}},
            lease_owner="dead-host:1:00:0",
            lease_until=utcnow() - timedelta(seconds=1),
        )
    async with running(store_url, chunk_max_attempts=3) as service:
        await until(lambda: _status(service, "s", 1, "failed"))
        await asyncio.sleep(0.3)  # time enough for chunk 2 to run, were it (wrongly) allowed to
        rows = await chunk_rows(service, T, "s")
        assert [row.status for row in rows] == ["failed", "pending"]  # chunk 2 must not overtake chunk 1
        assert rows[0].error and "lost" in rows[0].error
        assert (await service.sessions.get_session(T, "s")).blocked_by_seq == 1
        assert (await service.ingestion.retry_chunk(T, "s", 1)).status == "pending"
        rows = await settle(service, T, "s")
        assert [row.status for row in rows] == ["done", "done"]
        assert (await service.sessions.get_session(T, "s")).blocked_by_seq is None
        await assert_exactly_once(service, T, "s")


async def _status(service: MemoryService, session_id: str, seq: int, status: str) -> bool:
    rows = await chunk_rows(service, T, session_id)
    return len(rows) >= seq and rows[seq - 1].status == status


async def test_a_stolen_lease_drops_the_late_result_and_the_chunk_applies_once(
    store_url: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(Delay(1.0))
    async with running(store_url, **openai_policy(scripted_llm)) as service:
        await service.ingestion.ingest(T, "s", [ChunkIn(fact(1))], wait=False)
        await until(lambda: len(scripted_llm.requests) == 1)
        # Our worker stalls past its lease and another worker takes the session over.
        await _set(service, "s", lease_owner="rival:1:00:0", lease_until=utcnow() + timedelta(seconds=60))
        await until(lambda: scripted_llm.requests[0].finished is not None)
        await asyncio.sleep(0.3)
        [row] = await chunk_rows(service, T, "s")
        assert row.status == "processing"  # the late reply was not committed
        await assert_exactly_once(service, T, "s")
        # The rival dies too; after its lease runs out the chunk is redone, once.
        await _set(service, "s", lease_until=utcnow() - timedelta(seconds=1))
        [row] = await settle(service, T, "s")
        assert row.status == "done" and row.attempts == 2
        assert len(scripted_llm.requests) == 2
        await assert_exactly_once(service, T, "s")
        assert [item.content for item in (await service.memory.get_memory(T, "s")).semantic] == [fact(1)]


async def test_a_manual_edit_during_the_policy_call_is_kept_and_the_reply_applied_on_top(
    store_url: str, scripted_llm: ScriptedLLM
) -> None:
    """The reply (an insert) touches nothing the edit changed: it is applied on the edited memory
    without asking the policy again (a conflicting reply is proposed again: the queue state machine)."""
    scripted_llm.script(Delay(0.5))
    async with running(store_url, **openai_policy(scripted_llm)) as service:
        await service.ingestion.ingest(T, "s", [ChunkIn(fact(1))], wait=False)
        await until(lambda: len(scripted_llm.requests) == 1)
        edit = await service.memory.edit_memory(
            T, "s", Operation(Tool.INSERT, "semantic", content="Edited by a user.")
        )
        assert edit.status == "ok"
        [row] = await settle(service, T, "s")
        assert row.status == "done" and row.attempts == 1
        assert len(scripted_llm.requests) == 1
        operations = await service.sessions.list_operations(T, "s")
        assert [(op.actor, op.after) for op in operations] == [
            ("user", "Edited by a user."),
            ("policy", fact(1)),
        ]
        memory = await service.memory.get_memory(T, "s")
        assert [item.content for item in memory.semantic] == ["Edited by a user.", fact(1)]
        await assert_exactly_once(service, T, "s")


@pytest.mark.parametrize(
    ("failure", "error_part"),
    [
        (Status(500), "500"),
        (Delay(3.0), "timed out"),
        (Garbage(), "not a chat completion"),
    ],
    ids=["http-500", "timeout", "garbage"],
)
async def test_policy_failures_retry_then_fail_block_and_retry_chunk_recovers(
    store_url: str, scripted_llm: ScriptedLLM, failure: Behaviour, error_part: str
) -> None:
    scripted_llm.script(failure, failure)
    settings = openai_policy(scripted_llm, policy_timeout_s=0.5, chunk_max_attempts=2, retry_backoff_s=0.05)
    async with running(store_url, **settings) as service:
        outcome = await service.ingestion.ingest(T, "s", [ChunkIn(fact(1))], wait=True)
        [chunk] = outcome.chunks
        assert outcome.complete and chunk.status == "failed" and chunk.operations == []
        assert chunk.error is not None and error_part.lower() in chunk.error.lower()
        assert len(scripted_llm.requests) == 2  # one per attempt
        # Blocked behind seq 1: a waiting request returns at once instead of sitting out its timeout.
        later = await service.ingestion.ingest(T, "s", [ChunkIn(fact(2))], wait=True)
        assert not later.complete and later.chunks[0].status == "pending"
        await asyncio.sleep(0.3)
        assert (await chunk_rows(service, T, "s"))[1].status == "pending"
        session = await service.sessions.get_session(T, "s")
        assert session.blocked_by_seq == 1 and session.chunks["failed"] == 1
        assert await service.ready(full=True) == {"database": True, "policy": True}
        with pytest.raises(Conflict):
            await service.ingestion.retry_chunk(T, "s", later.chunks[0].seq)  # not failed
        with pytest.raises(NotFound):
            await service.ingestion.retry_chunk(T, "s", 99)
        assert (await service.ingestion.retry_chunk(T, "s", 1)).status == "pending"
        rows = await settle(service, T, "s")
        assert [(row.status, row.error) for row in rows] == [("done", None), ("done", None)]
        assert [item.content for item in (await service.memory.get_memory(T, "s")).semantic] == [
            fact(1),
            fact(2),
        ]
        await assert_exactly_once(service, T, "s")


async def test_a_transient_failure_is_retried_with_backoff(store_url: str, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script(Status(503))
    async with running(store_url, **openai_policy(scripted_llm, retry_backoff_s=0.2)) as service:
        outcome = await service.ingestion.ingest(T, "s", [ChunkIn(fact(1))], wait=True)
        assert outcome.chunks[0].status == "done" and outcome.chunks[0].error is None
        [row] = await chunk_rows(service, T, "s")
        assert row.attempts == 2
        first, second = scripted_llm.requests
        assert second.started - first.started >= 0.2  # waited the backoff
        await assert_exactly_once(service, T, "s")


async def test_a_client_error_fails_at_once(store_url: str, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script(Status(400, "bad request"))
    async with running(store_url, **openai_policy(scripted_llm, chunk_max_attempts=5)) as service:
        outcome = await service.ingestion.ingest(T, "s", [ChunkIn(fact(1))], wait=True)
        assert outcome.chunks[0].status == "failed" and "400" in (outcome.chunks[0].error or "")
        assert len(scripted_llm.requests) == 1


async def test_stopping_hands_the_chunk_in_flight_back(store_url: str, scripted_llm: ScriptedLLM) -> None:
    # A policy call that outlasts the shutdown grace period is given up: the chunk goes back to pending.
    scripted_llm.script(Delay(30.0))
    policy = openai_policy(scripted_llm, policy_timeout_s=60.0, shutdown_grace_s=1)
    async with running(store_url, **policy) as service:
        await service.ingestion.ingest(T, "s", [ChunkIn(fact(1))], wait=False)
        await until(lambda: len(scripted_llm.requests) == 1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 1 + 5, "the stop was not bounded by the grace period"
    async with running(store_url, run_workers=False) as service:
        [row] = await chunk_rows(service, T, "s")
        assert (row.status, row.attempts) == ("pending", 0)
        assert (await service.sessions.get_session(T, "s")).chunks["pending"] == 1
    async with running(store_url, **openai_policy(scripted_llm)) as service:
        [row] = await settle(service, T, "s")
        assert row.status == "done"
        await assert_exactly_once(service, T, "s")


@pytest.mark.postgres
async def test_two_worker_processes_never_process_one_session_at_once(migrated_pg_url: str) -> None:
    sessions, per_session = 6, 5
    with ScriptedLLM(default=Delay(0.1)) as llm:
        # Each process names its own model, so the requests show which process did the work. Each holds at
        # most 3 of the 6 sessions at once, and a session takes ~0.5 s: the other process must get some
        # (with the default concurrency the first claimer could hold all six, as happened under CI load).
        first = openai_policy(llm, workers=3, policy_concurrency=3, policy_model="process-one")
        second = openai_policy(llm, workers=3, policy_concurrency=3, policy_model="process-two")
        async with running(migrated_pg_url, **first) as one, running(migrated_pg_url, **second) as two:
            await asyncio.gather(
                *(
                    (one if (s + n) % 2 else two).ingestion.ingest(
                        T, f"s{s}", [ChunkIn(f"s{s} chunk {n}: Zorg owns boats.")], wait=False
                    )
                    for n in range(per_session)
                    for s in range(sessions)
                )
            )
            for s in range(sessions):
                rows = await settle(one, T, f"s{s}")
                assert [row.status for row in rows] == ["done"] * per_session
                await assert_exactly_once(one, T, f"s{s}")
                by_session = [r for r in llm.requests if r.chunk.startswith(f"s{s} ")]
                assert [r.chunk for r in sorted(by_session, key=lambda r: r.started)] == [
                    row.content for row in rows
                ]
    assert {r.model for r in llm.requests} == {"process-one", "process-two"}
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for request in llm.requests:
        assert request.finished is not None
        spans[request.chunk.split()[0]].append((request.started, request.finished))
    for session_spans in spans.values():
        session_spans.sort()
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(session_spans))
    # Meaningful only if sessions did run in parallel: some requests overlapped.
    everything = [span for group in spans.values() for span in group]
    peak = max(sum(1 for begin, end in everything if begin <= start < end) for start, _ in everything)
    assert peak > 1
