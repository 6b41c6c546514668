"""Stopping the chunk waiter's poller lets a status read in progress finish: cancelled half-way, the read
left SQLAlchemy a connection whose reset was cancelled too ("Exception during reset", a traceback in the
log of a clean shutdown; seen once in test_shutdown on a loaded machine)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from app.ingest import waiting
from app.ingest.wakeups import Wakeups
from app.store.database import Database
from app.store.schema import upgrade

pytestmark = pytest.mark.timeout(60)


async def test_stop_waits_for_the_poll_in_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}")
    await upgrade(db)
    inside, release = asyncio.Event(), asyncio.Event()
    finished: list[dict[int, str | None]] = []
    read = waiting._finished

    async def held_read(*args: Any) -> Any:  # a read that is still running when the stop comes
        inside.set()
        await release.wait()
        result = await read(*args)
        finished.append(result[0])
        return result

    monkeypatch.setattr(waiting, "_finished", held_read)
    waiter = waiting.ChunkWaiter(db, Wakeups(), poll_s=0.01)
    waiter._open[("tenant", "session")] = [{1}]  # a request waiting for chunk 1 of a session
    waiter.start()
    try:
        await asyncio.wait_for(inside.wait(), 10)
        stopping = asyncio.ensure_future(waiter.stop())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not stopping.done()  # the stop waits for the read instead of cancelling it
        release.set()
        await asyncio.wait_for(stopping, 10)
        assert finished == [{1: None}]  # the read ran to its end: no such chunk, its session is gone
    finally:
        release.set()
        await waiter.stop()
        await db.dispose()
