"""The worker tasks of one process."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket

from app.ingest.wakeups import Wakeups
from app.ingest.worker import Worker, WorkerConfig
from app.memory import Applier
from app.policy.backend import PolicyBackend
from app.store.database import Database


def owner_prefix() -> str:
    """Identifies this process in lease rows (host, pid, and a nonce in case pids repeat)."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"


class WorkerPool:
    def __init__(
        self,
        *,
        db: Database,
        policy: PolicyBackend,
        applier: Applier,
        wakeups: Wakeups,
        config: WorkerConfig,
        count: int,
    ) -> None:
        prefix = owner_prefix()
        self.workers = [
            Worker(
                db=db, policy=policy, applier=applier, wakeups=wakeups, config=config, owner=f"{prefix}:{n}"
            )
            for n in range(count)
        ]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [
            asyncio.create_task(worker.run(self._stop), name=f"memalpha-worker-{n}")
            for n, worker in enumerate(self.workers)
        ]

    async def stop(self) -> None:
        """Stop at once: a chunk in flight goes back to pending (see `Worker._abandon`)."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def wait(self) -> None:
        """Until the workers end (they end only when stopped or cancelled)."""
        await asyncio.gather(*self._tasks)
