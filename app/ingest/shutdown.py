"""Bounded graceful shutdown of the ingest workers, without cancelling a database transaction.

A task cancelled inside a SQLite write transaction can leave that connection holding the database's
write lock (the cancelled statement still runs on aiosqlite's thread after SQLAlchemy gave the
connection up, and the pool's reset of it is cancelled too): every later writer of the process then
waits SQLite's 30 s busy timeout and fails with "database is locked". Shutdown used to cancel the
workers wherever they were, so handing their chunks back (`ChunkQueue.abandon`) hung 30 s per chunk
and left them `processing` until their lease expired.

So a stopping pool cancels nothing while it can help it: it asks (`Shutdown.stop`: claim no more,
hand each session back after its chunk in flight), waits up to the grace period
(`MEMALPHA_SHUTDOWN_GRACE_S`) for the chunks in flight to commit, then gives up the policy calls still
running (`Shutdown.abandon`: only the HTTP call is cancelled; the worker hands its chunk back to
`pending` in a transaction of its own). Cancelling a worker task outright is the last resort, and the
transactions it may then cut short run to completion (`run_to_completion`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

_T = TypeVar("_T")


@dataclass
class Shutdown:
    """The two steps of a pool's stop, as events its claim loops and workers watch."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)  # claim nothing more
    abandon: asyncio.Event = field(default_factory=asyncio.Event)  # give up the policy calls in flight


async def run_to_completion(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Await `coroutine` in a task of its own that a cancellation of the caller does not cut short;
    the cancellation is re-raised once it has finished (unlike `asyncio.shield`, which returns at
    once and leaves the work running behind the caller's back, e.g. past the engine's disposal)."""
    task = asyncio.ensure_future(coroutine)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():
                raise
            cancelled = exc
        else:
            break
    if cancelled is not None:
        raise cancelled
    return result


async def unless(event: asyncio.Event, coroutine: Coroutine[Any, Any, _T]) -> asyncio.Task[_T] | None:
    """Run `coroutine` until it finishes or `event` is set, whichever comes first: its finished task
    (`.result()` returns or raises what it did), or None when the event came first (the coroutine is
    then cancelled and awaited)."""
    task = asyncio.ensure_future(coroutine)
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if task.done():
        return task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None
