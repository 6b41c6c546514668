"""A worker's session run starts the next head inside the previous chunk's commit (one start
transaction for a burst), and hands such a chunk back untouched when a stop arrives before it runs;
on SQLite and Postgres."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from store_helpers import running

from app.ingest.views import Views
from app.ingest.worker import Worker, WorkerConfig
from app.service import ChunkIn, MemoryService
from app.store.models import Chunk, ChunkStatus, Session

T = "tenant-c"
KEY = (T, "s")


class _Counting(Worker):
    """Counts start transactions; with `stop_after_commit`, a stop arrives right after each commit."""

    starts = 0
    stop_after_commit = False

    async def _start_next(self, key: Any) -> Any:
        self.starts += 1
        return await super()._start_next(key)

    async def _commit(self, *args: Any, **kwargs: Any) -> Any:
        outcome = await super()._commit(*args, **kwargs)
        if self.stop_after_commit:
            self.shutdown.stop.set()
        return outcome


async def _claimed_worker(service: MemoryService, chunks: int) -> _Counting:
    await service.ingestion.ingest(
        T, "s", [ChunkIn(f"Fact {n}: Zorg owns {n} boats.") for n in range(chunks)], wait=False
    )
    worker = _Counting(
        queue=service.queue,
        policy=service.policy,
        applier=service.applier,
        config=WorkerConfig(poll_s=0.05, attempt_timeout_s=30.0),
        owner="w",
        views=Views(),
    )
    assert await service.queue.claim(worker.owner) == [KEY]
    return worker


async def _state(service: MemoryService) -> tuple[list[tuple[str, int]], Session]:
    async with service.db.read() as db:
        chunks = (await db.execute(select(Chunk).where(Chunk.tenant_id == T).order_by(Chunk.seq))).scalars()
        statuses = [(chunk.status, chunk.attempts) for chunk in chunks]
        row = (await db.execute(select(Session).where(Session.tenant_id == T))).scalar_one()
    return statuses, row


async def test_a_burst_runs_on_one_start_transaction(store_url: str) -> None:
    async with running(store_url, run_workers=False) as service:
        worker = await _claimed_worker(service, 3)
        assert await worker.run_session(KEY) is False  # released with the last commit: nothing left
        statuses, row = await _state(service)
    assert statuses == [(ChunkStatus.DONE, 1)] * 3
    assert worker.starts == 1  # the 2nd and 3rd chunks were started by the commits before them
    assert row.lease_owner is None and row.ready_at is None


async def test_a_chunk_started_by_a_commit_goes_back_to_pending_at_a_stop(store_url: str) -> None:
    async with running(store_url, run_workers=False) as service:
        worker = await _claimed_worker(service, 2)
        worker.stop_after_commit = True
        assert await worker.run_session(KEY) is True  # handed back with work left
        statuses, row = await _state(service)
    # The second chunk was started by the first one's commit; the stop hands it back, attempt uncounted.
    assert statuses == [(ChunkStatus.DONE, 1), (ChunkStatus.PENDING, 0)]
    assert row.lease_owner is None and row.ready_at is not None
