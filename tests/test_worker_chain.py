"""A claim starts the claimed session's head in its own transaction (no start transaction for a
claim's first chunk), with the active policy; a worker's session run starts the next head inside the
previous chunk's commit (no start transaction for a burst), and hands such a chunk back untouched
when a stop arrives before it runs; on SQLite and Postgres."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from store_helpers import running

from app.ingest.views import Views
from app.ingest.worker import Step, Worker, WorkerConfig
from app.service import ChunkIn, MemoryService
from app.store import policies
from app.store.models import Chunk, ChunkStatus, Session
from app.store.types import utcnow

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


async def _claimed_worker(service: MemoryService, chunks: int) -> tuple[_Counting, Step]:
    """A worker that has claimed the session with `chunks` new chunks, and the head its claim started."""
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
    claimed = await worker.claim(4)
    assert claimed.leased == 1 and [key for key, _ in claimed.started] == [KEY]
    return worker, claimed.started[0][1]


async def _state(service: MemoryService) -> tuple[list[tuple[str, int]], Session]:
    async with service.db.read() as db:
        chunks = (await db.execute(select(Chunk).where(Chunk.tenant_id == T).order_by(Chunk.seq))).scalars()
        statuses = [(chunk.status, chunk.attempts) for chunk in chunks]
        row = (await db.execute(select(Session).where(Session.tenant_id == T))).scalar_one()
    return statuses, row


async def test_the_claim_starts_the_head_with_the_active_policy(store_url: str) -> None:
    async with running(store_url, run_workers=False) as service:
        async with service.db.write() as db:
            adapter = await policies.register(
                db,
                name="adapter-1",
                base_model="base",
                adapter_path=None,
                metrics={},
                manifest={},
                now=utcnow(),
            )
            await policies.activate(db, adapter, actor="test", action=policies.SWITCH, now=utcnow())
        worker, first = await _claimed_worker(service, 2)
        statuses, row = await _state(service)
    assert (first.seq, first.attempts, first.policy_name, first.model) == (1, 1, "adapter-1", "adapter-1")
    assert statuses == [(ChunkStatus.PROCESSING, 1), (ChunkStatus.PENDING, 0)]
    assert row.lease_owner == "w" and row.lease_until is not None and row.lease_until > utcnow()
    assert worker.starts == 0


async def test_a_claim_hands_back_a_session_with_nothing_runnable(store_url: str) -> None:
    async with running(store_url, run_workers=False, retry_backoff_s=3600.0) as service:
        worker, first = await _claimed_worker(service, 1)
        assert (
            await service.queue.fail_attempt(KEY, first.seq, worker.owner, "scripted") is ChunkStatus.PENDING
        )
        async with service.db.write() as db:  # the lease lapsed and the session looks ready…
            row = (await db.execute(select(Session).where(Session.tenant_id == T))).scalar_one()
            row.lease_until = row.ready_at = utcnow()
        claimed = await worker.claim(4)  # …but the head's own next attempt is an hour away
        statuses, row = await _state(service)
    assert claimed.leased == 1 and claimed.started == []
    assert statuses == [(ChunkStatus.PENDING, 1)]
    assert row.lease_owner is None and row.ready_at is not None and row.ready_at > utcnow()


async def test_a_burst_runs_on_one_start_transaction(store_url: str) -> None:
    async with running(store_url, run_workers=False) as service:
        worker, first = await _claimed_worker(service, 3)
        assert await worker.run_session(KEY, first) is False  # released with the last commit: nothing left
        statuses, row = await _state(service)
    assert statuses == [(ChunkStatus.DONE, 1)] * 3
    # The 1st chunk was started by the claim, the 2nd and 3rd by the commits before them.
    assert worker.starts == 0
    assert row.lease_owner is None and row.ready_at is None


async def test_a_chunk_started_by_a_commit_goes_back_to_pending_at_a_stop(store_url: str) -> None:
    async with running(store_url, run_workers=False) as service:
        worker, first = await _claimed_worker(service, 2)
        worker.stop_after_commit = True
        assert await worker.run_session(KEY, first) is True  # handed back with work left
        statuses, row = await _state(service)
    # The second chunk was started by the first one's commit; the stop hands it back, attempt uncounted.
    assert statuses == [(ChunkStatus.DONE, 1), (ChunkStatus.PENDING, 0)]
    assert row.lease_owner is None and row.ready_at is not None
