"""Wake-ups between the ingest path, the workers and the waiters.

In-process: `Wakeups` keeps asyncio events (one per claim loop, and per session for requests
waiting on their chunks). Across processes (Postgres): triggers on `chunks` (migration 0007) notify `work` when
chunks are inserted and `done` when one reaches a final status; the few other transitions that make
work claimable (`abandon`, `retry`) or send waiters back to the database (a deleted session)
`announce()` in their transaction. Postgres delivers both at commit, and `PgListener` turns the
notifications back into local wake-ups. Polling at `poll_interval_s` remains underneath both, so a
lost notification costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.store.sessions import SessionKey
from app.store.sql import Executor, dialect_name

log = logging.getLogger(__name__)

CHANNEL = "memalpha_ingest"
_SEPARATOR = "\x1f"  # cannot occur in tenant or session ids
_WORK = "work"
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
_DONE = "done"


class Watch:
    """What one waiter hears about a session: (seq, final status) reports, or (None, None) for
    "look in the database again" (the session was deleted, notifications may have been missed)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._reports: list[tuple[int | None, str | None]] = []

    def report(self, seq: int | None, status: str | None) -> None:
        self._reports.append((seq, status))
        self.event.set()

    def take(self) -> list[tuple[int | None, str | None]]:
        reports, self._reports = self._reports, []
        self.event.clear()
        return reports


class Wakeups:
    def __init__(self) -> None:
        self._workers: list[asyncio.Event] = []
        self._sessions: dict[SessionKey, set[Watch]] = {}

    def work(self) -> None:
        """New work may be claimable: wake one claim loop of this process, the first without a
        wake-up pending. One is enough: a woken loop claims for every free slot, and one woken while
        it claims looks again right after (`WorkerPool._claim_loop`). Waking them all cost every other
        loop a claim that found the work taken (a transaction that claims nothing: three round trips)."""
        for event in self._workers:
            if not event.is_set():
                event.set()
                return

    def finished(self, key: SessionKey, seq: int | None = None, status: str | None = None) -> None:
        """Chunk `seq` of `key` reached its final `status`; no seq: waiters should look again."""
        for watch in self._sessions.get(key, ()):
            watch.report(seq, status)

    def recheck_all(self) -> None:
        for watches in self._sessions.values():
            for watch in watches:
                watch.report(None, None)

    @contextmanager
    def worker(self) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._workers.append(event)
        try:
            yield event
        finally:
            self._workers.remove(event)

    @contextmanager
    def watch(self, key: SessionKey) -> Iterator[Watch]:
        watch = Watch()
        self._sessions.setdefault(key, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._sessions[key]
            watches.discard(watch)
            if not watches:
                del self._sessions[key]

    def dispatch(self, payload: str, *, own: bool = False) -> None:
        """A notification; `own`: sent by this process's own connections. This process wakes its
        workers directly when it makes work (`work()` after the commit), and waking them again when
        the notification comes back would cost a claim that finds nothing."""
        kind, _, rest = payload.partition(_SEPARATOR)
        if kind == _WORK:
            if not own:
                self.work()
        elif kind == _DONE:
            tenant, session_id, seq, status = rest.rsplit(_SEPARATOR, 3)
            self.finished((tenant, session_id), int(seq) if seq else None, status or None)


async def announce(db: Executor, *, work: bool = False, recheck: SessionKey | None = None) -> None:
    """Tell other processes, at this transaction's commit (Postgres only; SQLite is one process):
    `work`, that a session became claimable without a chunk being inserted; `recheck`, that the
    waiters of that session should look in the database again. Inserted chunks and final statuses
    are announced by the triggers."""
    if await dialect_name(db) != "postgresql":
        return
    payloads = [_WORK] if work else []
    if recheck is not None:
        payloads.append(_SEPARATOR.join((_DONE, *recheck, "", "")))
    for payload in payloads:
        await db.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})


class PgListener:
    """LISTENs on a dedicated connection and feeds `Wakeups`; reconnects after failures."""

    def __init__(
        self,
        database_url: str,
        wakeups: Wakeups,
        retry_s: float,
        own_backends: AbstractSet[int] = frozenset(),
    ) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._wakeups = wakeups
        # The server pids of this process's pooled connections (`Database.backend_pids`, kept up to
        # date by the pool): a notification names the backend that sent it.
        self._own = own_backends
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="memalpha-pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        lost = False
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    lost = False
                    # Whatever was committed while we were not listening: look again now rather than
                    # after a poll interval.
                    self._wakeups.work()
                    self._wakeups.recheck_all()
                    async for notification in connection.notifies():
                        self._wakeups.dispatch(notification.payload, own=notification.pid in self._own)
            except (psycopg.Error, OSError) as exc:
                if not lost:  # once per outage; the database's outage log tells when it is back
                    log.warning("LISTEN connection lost (%s); retrying every %.1f s", exc, self._retry_s)
                lost = True
                await asyncio.sleep(self._retry_s)
