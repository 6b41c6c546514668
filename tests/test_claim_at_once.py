"""The claim without a transaction (Postgres, `Worker._claim_at_once`): the ready sessions and their
heads read without a lock, then leased and started by one statement that checks each session row is
still at the version read. A row changed in between (new work, another worker's claim) is not leased by
that statement, and the claim in a transaction takes over; two workers never both lease a session."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select
from store_helpers import running, sent_statements

from app.ingest.queue import ChunkQueue
from app.ingest.views import Views
from app.ingest.worker import Worker, WorkerConfig
from app.service import ChunkIn, MemoryService
from app.store.models import Chunk, ChunkStatus, Session

pytestmark = pytest.mark.postgres

T = "tenant-claim"
KEY = (T, "s")


def _worker(service: MemoryService, owner: str, views: Views) -> Worker:
    return Worker(
        queue=service.queue,
        policy=service.policy,
        applier=service.applier,
        config=WorkerConfig(poll_s=0.05, attempt_timeout_s=30.0),
        owner=owner,
        views=views,
    )


async def _kept(service: MemoryService, views: Views) -> None:
    """One chunk processed by a worker sharing `views`: the session's memory is kept at its version."""
    await service.ingestion.ingest(T, "s", [ChunkIn("Fact 0: Zorg owns 0 boats.")], wait=False)
    worker = _worker(service, "first", views)
    claimed = await worker.claim(4)
    assert await worker.run_session(KEY, claimed.started[0][1]) is False


async def _chunks(service: MemoryService) -> list[tuple[int, str, int]]:
    async with service.db.read() as db:
        rows = await db.execute(select(Chunk.seq, Chunk.status, Chunk.attempts).order_by(Chunk.seq))
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def _owner(service: MemoryService) -> str | None:
    async with service.db.read() as db:
        return (await db.execute(select(Session.lease_owner))).scalar_one()


async def test_a_claim_is_a_read_and_one_statement_without_a_transaction(migrated_pg_url: str) -> None:
    views = Views()
    async with running(migrated_pg_url, run_workers=False) as service:
        await _kept(service, views)
        await service.ingestion.ingest(T, "s", [ChunkIn("Fact 1: Zorg owns 1 boat.")], wait=False)
        worker = _worker(service, "w", views)
        async with sent_statements(service) as sent:
            claimed = await worker.claim(4)
        chunks, owner = await _chunks(service), await _owner(service)
    assert sent == [("SELECT sessions.tenant_id, sessions.id,", True), ("WITH leased AS", True)]
    assert claimed.leased == 1 and not claimed.lost
    [(key, step)] = claimed.started
    assert key == KEY and step is not None and (step.seq, step.attempts) == (2, 1)
    assert chunks == [(1, ChunkStatus.DONE, 1), (2, ChunkStatus.PROCESSING, 1)] and owner == "w"


async def test_a_row_changed_after_the_read_is_claimed_by_the_transaction(
    migrated_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New work accepted between the read and the statement changes the row: the statement leases
    nothing, and the claim in a transaction leases the session and starts its head (still seq 2)."""
    views = Views()
    async with running(migrated_pg_url, run_workers=False) as service:
        await _kept(service, views)
        await service.ingestion.ingest(T, "s", [ChunkIn("Fact 1: Zorg owns 1 boat.")], wait=False)
        peek_ready = ChunkQueue.peek_ready

        async def then_more_work(self: ChunkQueue, *args: Any) -> Any:
            ready = await peek_ready(self, *args)
            await service.ingestion.ingest(T, "s", [ChunkIn("Fact 2: Zorg owns 2 boats.")], wait=False)
            return ready

        monkeypatch.setattr(ChunkQueue, "peek_ready", then_more_work)
        worker = _worker(service, "w", views)
        claim_at_once = worker._claim_at_once
        at_once: list[Any] = []

        async def recorded(limit: int) -> Any:
            at_once.append(await claim_at_once(limit))
            return at_once[-1]

        monkeypatch.setattr(worker, "_claim_at_once", recorded)
        claimed = await worker.claim(4)
        chunks, owner = await _chunks(service), await _owner(service)
    assert at_once[0].leased == 0 and at_once[0].lost
    assert claimed.leased == 1 and [(key, step.seq) for key, step in claimed.started if step] == [(KEY, 2)]
    assert chunks == [(1, ChunkStatus.DONE, 1), (2, ChunkStatus.PROCESSING, 1), (3, ChunkStatus.PENDING, 0)]
    assert owner == "w"


async def test_two_workers_claiming_at_once_lease_a_session_once(
    migrated_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read the session as ready before either leases it: one statement leases it and starts its
    head, the other finds the row changed and its transaction finds nothing ready."""
    views = Views()
    async with running(migrated_pg_url, run_workers=False) as service:
        await _kept(service, views)
        await service.ingestion.ingest(T, "s", [ChunkIn("Fact 1: Zorg owns 1 boat.")], wait=False)
        both_read = asyncio.Barrier(2)
        peek_ready = ChunkQueue.peek_ready

        async def together(self: ChunkQueue, *args: Any) -> Any:
            ready = await peek_ready(self, *args)
            await both_read.wait()
            return ready

        monkeypatch.setattr(ChunkQueue, "peek_ready", together)
        workers = [_worker(service, owner, views) for owner in ("a", "b")]
        claims = await asyncio.gather(*(worker.claim(4) for worker in workers))
        chunks, owner = await _chunks(service), await _owner(service)
    assert sorted(claim.leased for claim in claims) == [0, 1]
    winner = next(w.owner for w, claim in zip(workers, claims, strict=True) if claim.leased)
    assert owner == winner
    assert chunks == [(1, ChunkStatus.DONE, 1), (2, ChunkStatus.PROCESSING, 1)]


async def test_a_head_in_backoff_takes_the_transaction(migrated_pg_url: str) -> None:
    """A head that would not start now is not the statement's to decide: the claim in a transaction
    queues the session at the head's backoff time and hands it back, as before."""
    views = Views()
    async with running(migrated_pg_url, run_workers=False, retry_backoff_s=3600.0) as service:
        await _kept(service, views)
        await service.ingestion.ingest(T, "s", [ChunkIn("Fact 1: Zorg owns 1 boat.")], wait=False)
        worker = _worker(service, "w", views)
        claimed = await worker.claim(4)
        [(_, step)] = claimed.started
        assert step is not None
        await service.queue.fail_attempt(KEY, step.seq, "w", "scripted")
        async with service.db.write() as db:  # the lease lapsed and the session looks ready…
            row = (await db.execute(select(Session))).scalar_one()
            row.lease_until = row.ready_at = row.updated_at
        async with sent_statements(service) as sent:
            again = await worker.claim(4)  # …but the head's own next attempt is an hour away
        chunks, owner = await _chunks(service), await _owner(service)
    assert sent[0] == ("SELECT sessions.tenant_id, sessions.id,", True) and not sent[1][1]
    assert again.leased == 1 and again.started == []
    assert chunks == [(1, ChunkStatus.DONE, 1), (2, ChunkStatus.PENDING, 1)] and owner is None
