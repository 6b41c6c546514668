"""The ingest workers of one process: a few claim loops and up to `concurrency` sessions in flight.

Concurrency is the number of sessions this process works on at once, i.e. of policy calls in flight
(one session runs one chunk at a time, so per-session order stays strict). It is independent of the
claim loops (`MEMALPHA_WORKERS`), which only take leases: a claim loop holds the free slots, claims
the longest-waiting ready sessions (starting their heads in the claim's transaction,
`Worker.claim`) and runs each as its own task, so a slow policy call never stops this process from
feeding other sessions to the policy server (vLLM batches concurrent requests).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
from collections.abc import Collection

from app.ingest.queue import ChunkQueue
from app.ingest.shutdown import Shutdown, unless
from app.ingest.views import Views
from app.ingest.worker import Claimed, Step, Worker, WorkerConfig
from app.memory import Applier
from app.policy.backend import PolicyBackend
from app.store.sessions import SessionKey

log = logging.getLogger(__name__)

# After the grace period: how long the workers get to hand their chunks back (one short transaction
# each) before they are cancelled.
_ABANDON_S = 5.0


def owner_prefix() -> str:
    """Identifies this process in lease rows (host, pid, and a nonce in case pids repeat)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"


class WorkerPool:
    def __init__(
        self,
        *,
        queue: ChunkQueue,
        policy: PolicyBackend,
        applier: Applier,
        config: WorkerConfig,
        claimers: int,
        concurrency: int,
    ) -> None:
        self.queue, self.policy, self.applier, self.config = queue, policy, applier, config
        self.claimers, self.concurrency = claimers, concurrency
        self._prefix = owner_prefix()
        # Each claim gets its own owner name: a lease that expired and was claimed again by this same
        # process is then still told apart from the stale one at commit.
        self._claims = itertools.count()
        self._slots = asyncio.Semaphore(concurrency)
        self._shutdown = Shutdown()
        self._deadline: float | None = None  # loop time by which the chunks in flight are given up
        self._loops: list[asyncio.Task[None]] = []
        self._sessions: set[asyncio.Task[None]] = set()
        self._views = Views()

    def start(self) -> None:
        self._shutdown, self._deadline = Shutdown(), None
        self._loops = [
            asyncio.create_task(self._claim_loop(), name=f"memalpha-claim-{n}") for n in range(self.claimers)
        ]

    def begin_stop(self, grace_s: float) -> None:
        """Claim nothing more; the chunks in flight get `grace_s` to commit (`stop` waits for them).
        Called at SIGTERM, so that they finish while the HTTP server drains its connections."""
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + grace_s
            self._shutdown.stop.set()

    async def stop(self, grace_s: float) -> None:
        """Graceful and bounded (`app/ingest/shutdown.py`): the chunks in flight commit within
        `grace_s` (from `begin_stop`), or go back to pending; at most `grace_s` + `_ABANDON_S`."""
        self.begin_stop(grace_s)
        # The claim loops first: one may still start a session (which it then hands back at once).
        await self._until_deadline(self._loops)
        running = await self._until_deadline({*self._loops, *self._sessions})
        if running:
            log.info("grace period over with %d chunks in flight: they go back to pending", len(running))
            self._shutdown.abandon.set()
            _, running = await asyncio.wait(running, timeout=_ABANDON_S)
        if running:  # a database that does not answer: the leases expire and other workers take over
            log.warning(
                "%d worker tasks did not stop within %.0f s; cancelling them", len(running), _ABANDON_S
            )
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        self._loops, self._sessions = [], set()

    async def _until_deadline(self, tasks: Collection[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
        """Wait for `tasks` until the grace period ends; returns those still running."""
        assert self._deadline is not None
        remaining = self._deadline - asyncio.get_running_loop().time()
        running = {task for task in tasks if not task.done()}
        if running and remaining > 0:
            _, running = await asyncio.wait(running, timeout=remaining)
        return running

    async def wait(self) -> None:
        """Until the claim loops end (they end only when stopping or cancelled)."""
        await asyncio.gather(*self._loops)

    async def _claim_loop(self) -> None:
        with self.queue.wakeups.worker() as woken:
            while not self._shutdown.stop.is_set():
                if await unless(self._shutdown.stop, self._slots.acquire()) is None:
                    return
                slots = 1
                while not self._slots.locked():  # every free slot: one claim fills them all
                    await self._slots.acquire()  # free, so it does not wait
                    slots += 1
                woken.clear()  # before looking: a wake-up during the look is not lost
                worker = Worker(
                    queue=self.queue,
                    policy=self.policy,
                    applier=self.applier,
                    config=self.config,
                    owner=f"{self._prefix}:{next(self._claims)}",
                    shutdown=self._shutdown,
                    views=self._views,
                )
                try:
                    claimed = await worker.claim(slots)
                except Exception as exc:  # the database may be away for a while; keep the loop alive
                    if not self.queue.db.outage.failed(exc):  # an outage is logged once, not per poll
                        log.exception("claiming a session failed")
                    claimed = Claimed(0, [])
                for key, first in claimed.started:
                    task = asyncio.create_task(
                        self._run(worker, key, first), name=f"memalpha-session-{worker.owner}"
                    )
                    self._sessions.add(task)
                    task.add_done_callback(self._sessions.discard)
                for _ in range(slots - len(claimed.started)):
                    self._slots.release()
                if claimed.leased < slots:  # nothing else was ready: wait for news rather than look again
                    await self._idle(woken)

    async def _run(self, worker: Worker, key: SessionKey, first: Step | None) -> None:
        left = False
        try:
            left = await worker.run_session(key, first)
        except Exception as exc:  # the lease expires and another worker takes the session over
            if not self.queue.db.outage.failed(exc):
                log.exception("worker %s: processing %s failed", worker.owner, key)
        finally:
            self._slots.release()
            if left:  # handed back with work left: look for it now, not at the next poll
                self.queue.wakeups.work()

    async def _idle(self, woken: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(woken.wait()), asyncio.ensure_future(self._shutdown.stop.wait())]
        await asyncio.wait(waits, timeout=self.config.poll_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
