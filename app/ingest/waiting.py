"""Waiting for chunks to finish (`wait=true`).

A waiter reads its chunks' statuses once, then settles them from reports: this process's workers
report each chunk they finish, other processes' workers through Postgres NOTIFY, and one poller task
per process reads the database every `poll_interval_s` for all open waits together (the fallback
for a missed notification, or a worker process on SQLite). Many waiting requests therefore cost a
few queries per poll interval, not a few per request."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.ingest.shutdown import run_to_completion
from app.ingest.wakeups import Wakeups, Watch
from app.store import chunks
from app.store.database import Database
from app.store.models import Chunk, ChunkStatus
from app.store.sessions import SessionKey
from app.store.sql import batched

log = logging.getLogger(__name__)


class ChunkWaiter:
    def __init__(self, db: Database, wakeups: Wakeups, poll_s: float) -> None:
        self.db, self.wakeups, self.poll_s = db, wakeups, poll_s
        self._open: dict[SessionKey, list[set[int]]] = {}  # the still-open seqs of each wait in progress
        self._poller: asyncio.Task[None] | None = None
        self._events: set[asyncio.Event] = set()  # of the waits in progress
        self._released = False

    def release(self) -> None:
        """Shutting down: every wait in progress, and any begun later, returns now with what it has
        (the request answers 202 with the chunks still open) instead of holding the HTTP server's
        drain for up to its timeout."""
        self._released = True
        for event in self._events:
            event.set()

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll(), name="memalpha-wait-poller")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None

    async def wait(
        self, key: SessionKey, seqs: Sequence[int], timeout_s: float, *, watch: Watch, look: bool
    ) -> bool:
        """True when every chunk in `seqs` is done or failed within `timeout_s`; False at the timeout,
        or at once when the open ones wait behind a failed chunk (nothing moves until it is retried).
        `watch` (of `key`) must have been set up before the chunks were committed, so that no report
        of them goes unheard; `look`: read their statuses first (some may be final or stuck behind a
        failed chunk already: duplicates, a blocked session), otherwise the reports say it all."""
        deadline = time.monotonic() + timeout_s
        pending = set(seqs)
        self._open.setdefault(key, []).append(pending)
        self._events.add(watch.event)
        try:
            blocked_by = await self._look(key, pending) if look else None
            while True:
                for seq, status in watch.take():
                    if seq is None:  # told to look again (deleted session, reconnected listener)
                        blocked_by = await self._look(key, pending)
                    else:
                        pending.discard(seq)
                        if status == ChunkStatus.FAILED:
                            blocked_by = seq
                if not pending:
                    return True
                if self._released:
                    return False
                if blocked_by is not None and blocked_by < min(pending):
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(watch.event.wait(), timeout=remaining)
                except TimeoutError:
                    pass
        finally:
            self._events.discard(watch.event)
            waits = self._open[key]
            waits.remove(pending)
            if not waits:
                del self._open[key]

    async def _look(self, key: SessionKey, pending: set[int]) -> int | None:
        """Drop finished seqs from `pending`; return the seq of a failed chunk heading the session."""
        async with self.db.read() as session:
            finished, blocked_by = await _finished(session, key, pending)
        pending.difference_update(finished)
        return blocked_by

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            for key, waits in list(self._open.items()):
                wanted = set().union(*waits)
                if not wanted:
                    continue
                try:
                    # `stop` cancels this loop: a read cut short there leaves SQLAlchemy a connection
                    # whose reset is cancelled too (an error in the log at every unlucky shutdown).
                    finished, blocked_by = await run_to_completion(self._read(key, wanted))
                except Exception as exc:  # the database may be away; the waits time out on their own
                    if not self.db.outage.failed(exc):
                        log.exception("polling chunk statuses of %s failed", key)
                    continue
                for seq, status in finished.items():
                    self.wakeups.finished(key, seq, status)
                if blocked_by is not None:
                    self.wakeups.finished(key, blocked_by, ChunkStatus.FAILED)

    async def _read(self, key: SessionKey, wanted: set[int]) -> tuple[dict[int, str | None], int | None]:
        async with self.db.read() as session:
            return await _finished(session, key, wanted)


async def _finished(
    session: AsyncSession, key: SessionKey, seqs: set[int]
) -> tuple[dict[int, str | None], int | None]:
    """The seqs of `seqs` that will not move any more, with their final status (None: the chunk is gone
    with its session), and the seq of a failed chunk heading the session, if one does."""
    rows: dict[int, str] = {}
    for batch in batched(sorted(seqs)):
        query = select(Chunk.seq, Chunk.status).where(
            Chunk.tenant_id == key[0], Chunk.session_id == key[1], Chunk.seq.in_(batch)
        )
        rows.update((seq, status) for seq, status in await session.execute(query))
    finished = {seq: rows.get(seq) for seq in seqs if rows.get(seq) in (None, *chunks.FINAL_STATUSES)}
    head = await chunks.head(session, key) if len(finished) < len(seqs) else None
    return finished, head.seq if head is not None and head.status == ChunkStatus.FAILED else None
