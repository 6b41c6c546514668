"""Accepting chunks (validated and split before anything is written) and retrying a failed one."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

from app.contracts.schemas import ChunkResult, IngestResponse
from app.errors import Conflict, NotFound
from app.ingest.prepare import ChunkIn, prepare
from app.ingest.queue import Accepted, ChunkStatus
from app.service.reads import session_row
from app.service.results import logged
from app.store import chunks
from app.store.sessions import SessionKey
from app.store.sql import IN_BATCH
from app.store.types import utcnow

if TYPE_CHECKING:
    from app.service.runtime import MemoryService

# Input up to this size is validated and split on the event loop (a thread hop costs more).
_INLINE_PREPARE_CHARS = 32_768


class Ingestion:
    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def ingest(
        self, tenant: str, session_id: str, chunks_in: list[ChunkIn], *, wait: bool
    ) -> IngestResponse:
        key = self.service.key(tenant, session_id)
        prepare_all = functools.partial(
            prepare,
            chunks_in,
            max_chunk_bytes=self.service.settings.max_chunk_bytes,
            max_chunk_tokens=self.service.settings.max_chunk_tokens,
            max_chunks=self.service.settings.max_chunks_per_request,
            counter=self.service.counter,
        )
        # Splitting long input is CPU work: off the event loop, so that one large request does not
        # stall every other request (and the liveness probe).
        size = sum(len(chunk.content) for chunk in chunks_in if isinstance(chunk.content, str))
        inputs = await asyncio.to_thread(prepare_all) if size > _INLINE_PREPARE_CHARS else prepare_all()
        # Watched from before the commit, so no report of these chunks can be missed: the wait then
        # reads their statuses only when some may be final or stuck already.
        with self.service.wakeups.watch(key) as watch:
            accepted = await self.service.queue.enqueue(key, inputs, utcnow())
            if wait:
                await self.service.waiter.wait(
                    key,
                    [seq for item in accepted for seq in item.seqs],
                    self.service.settings.ingest_wait_timeout_s,
                    watch=watch,
                    look=any(item.duplicate or item.blocked for item in accepted),
                )
        outcomes = await self._outcomes(key, accepted)
        complete = all(outcome.status in chunks.FINAL_STATUSES for outcome in outcomes)
        return IngestResponse(session_id=session_id, chunks=outcomes, complete=complete)

    async def _outcomes(self, key: SessionKey, accepted: list[Accepted]) -> list[ChunkResult]:
        seqs = [seq for item in accepted for seq in item.seqs]
        db = self.service.db
        if not db.is_sqlite and len(seqs) <= IN_BATCH:
            # One statement without a transaction (a chunk and its operations from one snapshot).
            async with db.autocommit_connection() as connection:
                rows = await chunks.outcomes_at_once(connection, key, seqs)
        else:  # several batches share a snapshot; SQLite is local (no round trips to save)
            async with db.read() as session:
                rows = await chunks.outcomes(session, key, seqs)
        out = []
        for item in accepted:
            for seq in item.seqs:
                row = rows.get(seq)
                if row is None:  # the session was deleted meanwhile
                    raise NotFound(f"session {key[1]!r} not found")
                out.append(
                    ChunkResult(
                        seq=seq,
                        status=row.status,  # type: ignore[arg-type]  # a ChunkStatus value
                        operations=[logged(op) for op in row.operations],
                        error=row.error if row.status != ChunkStatus.DONE else None,
                        duplicate=item.duplicate,
                    )
                )
        return out

    async def retry_chunk(self, tenant: str, session_id: str, seq: int) -> ChunkResult:
        key = self.service.key(tenant, session_id)
        async with self.service.db.write() as session:
            row = await session_row(session, key, for_update=True)
            chunk = await chunks.get(session, key, seq)
            if chunk is None:
                raise NotFound(f"chunk {seq} not found in session {session_id!r}")
            if chunk.status != ChunkStatus.FAILED:
                raise Conflict(f"chunk {seq} is {chunk.status}; only failed chunks can be retried")
            await self.service.queue.retry(session, row, chunk, utcnow())
        self.service.wakeups.work()
        return ChunkResult(
            seq=seq,
            status=ChunkStatus.PENDING,  # type: ignore[arg-type]  # the contract spells it as a Literal
            operations=[],
            error=chunk.error,
            duplicate=False,
        )
