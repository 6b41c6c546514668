"""Sessions and their logs: summaries, listing, deletion, the chunk log and the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.contracts.schemas import ChunkRecord, OperationRecord, SessionOut
from app.errors import BadRequest
from app.ingest.wakeups import announce
from app.service.reads import session_row
from app.store import audit, chunks, sessions
from app.store.memory import load_state

if TYPE_CHECKING:
    from app.service.runtime import MemoryService


class Sessions:
    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def get_session(self, tenant: str, session_id: str) -> SessionOut:
        key = self.service.key(tenant, session_id)
        async with self.service.db.read() as session:
            row = await session_row(session, key)
            counted = await sessions.counts(session, tenant, [session_id])
            state = await load_state(session, row)
        return sessions.summary(row, counted[session_id], memory_tokens=self.service.tokens(state).total)

    async def list_sessions(self, tenant: str, *, limit: int = 100, offset: int = 0) -> list[SessionOut]:
        if limit < 1 or offset < 0:
            raise BadRequest("limit must be positive and offset not negative")
        async with self.service.db.read() as session:
            rows = await sessions.list_sessions(session, tenant, limit=limit, offset=offset)
            counted = await sessions.counts(session, tenant, [row.id for row in rows])
            # Each memory through the state cache: one load per session version, then free.
            states = [await self.service.states.get(session, (tenant, row.id), row) for row in rows]
        return [
            sessions.summary(row, counted[row.id], memory_tokens=self.service.tokens(state).total)
            for row, state in zip(rows, states, strict=True)
        ]

    async def delete_session(self, tenant: str, session_id: str) -> None:
        key = self.service.key(tenant, session_id)
        async with self.service.db.write() as session:
            await session_row(session, key, for_update=True)
            await sessions.delete_session(session, key)
            await announce(session, recheck=key)
        self.service.states.forget(key)
        self.service.wakeups.finished(key)

    async def list_chunks(
        self, tenant: str, session_id: str, *, status: str | None = None, after_seq: int = 0, limit: int = 100
    ) -> list[ChunkRecord]:
        if status is not None and status not in sessions.CHUNK_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(sessions.CHUNK_STATUSES)}")
        key = self.service.key(tenant, session_id)
        async with self.service.db.read() as session:
            await session_row(session, key)
            rows = await chunks.page(session, key, status=status, after_seq=after_seq, limit=limit)
        return [chunks.chunk_record(row) for row in rows]

    async def list_operations(
        self, tenant: str, session_id: str, *, after_id: int = 0, limit: int = 100
    ) -> list[OperationRecord]:
        key = self.service.key(tenant, session_id)
        async with self.service.db.read() as session:
            await session_row(session, key)
            rows = await audit.page(session, key, after_id=after_id, limit=limit)
        return [audit.operation_record(row) for row in rows]
