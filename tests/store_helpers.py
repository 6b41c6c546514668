"""Helpers of the store and ingest tests: a started service, and direct looks at its tables."""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from conftest import service_settings
from scripted_llm import ScriptedLLM
from sqlalchemy import event, func, select

from app.service import MemoryService
from app.store.models import Chunk, OperationLog


@asynccontextmanager
async def running(
    url: str, *, run_workers: bool = True, policy: Any = None, **overrides: Any
) -> AsyncIterator[MemoryService]:
    service = MemoryService(service_settings(url, **overrides), policy=policy)
    await service.start(run_workers=run_workers)
    try:
        yield service
    finally:
        await service.stop()


async def policy_ops_per_chunk(service: MemoryService, tenant: str, session_id: str) -> Counter[int]:
    """How many audit rows each chunk's policy run left."""
    async with service.db.read() as db:
        rows = await db.execute(
            select(OperationLog.chunk_seq, func.count())
            .where(
                OperationLog.tenant_id == tenant,
                OperationLog.session_id == session_id,
                OperationLog.actor == "policy",
            )
            .group_by(OperationLog.chunk_seq)
        )
        return Counter({seq: count for seq, count in rows})


async def chunk_rows(service: MemoryService, tenant: str, session_id: str) -> list[Chunk]:
    async with service.db.read() as db:
        query = (
            select(Chunk).where(Chunk.tenant_id == tenant, Chunk.session_id == session_id).order_by(Chunk.seq)
        )
        return list((await db.execute(query)).scalars())


async def assert_exactly_once(service: MemoryService, tenant: str, session_id: str) -> None:
    """Every done chunk left exactly one audit row per tool call its (single, committed) policy reply
    held, and the policy's audit rows are in seq order."""
    counts = await policy_ops_per_chunk(service, tenant, session_id)
    for chunk in await chunk_rows(service, tenant, session_id):
        if chunk.status == "done":
            assert chunk.usage is not None
            assert counts[chunk.seq] == chunk.usage["calls"], (chunk.seq, counts[chunk.seq], chunk.usage)
        else:
            assert counts[chunk.seq] == 0, chunk.seq
    operations = await service.sessions.list_operations(tenant, session_id, limit=100_000)
    seqs = [op.chunk_seq for op in operations if op.actor == "policy"]
    assert seqs == sorted(seqs), "chunks were applied out of order"


async def settle(service: MemoryService, tenant: str, session_id: str, timeout: float = 30.0) -> list[Chunk]:
    """Wait until no chunk of the session is pending or processing; returns the chunk rows."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = await chunk_rows(service, tenant, session_id)
        if all(row.status in ("done", "failed") for row in rows):
            return rows
        assert asyncio.get_running_loop().time() < deadline, (
            f"chunks did not settle: {[r.status for r in rows]}"
        )
        await asyncio.sleep(0.05)


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll `condition` (plain or async) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def openai_policy(llm: ScriptedLLM, **overrides: Any) -> dict[str, Any]:
    """Settings for the `openai` backend against the scripted server: no transport retries (the
    worker's attempts are what the tests count), short timeouts."""
    return {
        "policy_backend": "openai",
        "policy_url": llm.url,
        "policy_model": llm.model,
        "policy_max_retries": 0,
        "policy_timeout_s": 5.0,
        **overrides,
    }


@asynccontextmanager
async def sent_statements(
    service: MemoryService, *, unless: tuple[str, ...] = ()
) -> AsyncIterator[list[tuple[str, bool]]]:
    """The statements the service sends while open (first three words) and whether each ran in
    autocommit, but those that start with one of `unless` and the backlog's periodic recount
    (`ChunkQueue.refresh_backlog`, which may fall in any window)."""
    unless = (*unless, "SELECT count(*)")
    sent: list[tuple[str, bool]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith(unless):
            sent.append((" ".join(statement.split()[:3]), conn.connection.driver_connection.autocommit))

    event.listen(service.db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(service.db.engine.sync_engine, "before_cursor_execute", record)
