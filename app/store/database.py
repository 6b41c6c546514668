"""Engine and transactions for PostgreSQL (psycopg 3) and SQLite (aiosqlite).

Two kinds of transaction: `read()` and `write()` (on an ORM session), or `read_connection()` and
`write_connection()` (on a plain connection, for transactions that load no ORM entity: the ingest
worker's, where the session's unit of work and identity map were ~380 Python calls a chunk). On Postgres both are plain transactions; row locks
(`FOR UPDATE`) do the serialising. SQLite has no row locks: a write transaction starts with
`BEGIN IMMEDIATE` (takes the database write lock up front, so a read-then-write transaction cannot
fail half-way on a lock upgrade, also against other processes), and in-process writers queue on an
asyncio lock first so they do not pile up on SQLite's busy timeout holding pool connections.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

from psycopg import pq
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.store.outage import OutageLog

_WRITE_OPTION = "memalpha_write"
_SQLITE_BUSY_TIMEOUT_MS = 30_000


def async_url(url: str) -> str:
    """Accept the plain URLs people write and pick our async drivers for them."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database {backend!r}: use postgresql:// or sqlite:///")
    return parsed.render_as_string(hide_password=False)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Hand transaction control to SQLAlchemy's "begin" event below (the driver would BEGIN DEFERRED).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.close()


def _pg_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled Postgres connection the server has dropped (a restart, an idle timeout): the
    server then sent a FATAL message and closed the socket, so the idle connection has something to
    read. A pooled connection never LISTENs (`PgListener` has its own), so an idle one that is sound
    has nothing to read (a rare unsolicited message, such as a reported setting changed by a config
    reload, only costs a reconnect). This replaces `pool_pre_ping`, whose `SELECT 1` was one round
    trip per transaction (five per chunk); like it, the refusal makes the pool replace every older
    connection."""
    pgconn = dbapi_connection.driver_connection.pgconn
    if pgconn.status != pq.ConnStatus.OK:  # closed already: it has no socket to look at
        raise InvalidatePoolError("this pooled connection is closed")
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    if poller.poll(0):
        raise InvalidatePoolError("the server closed or is closing this pooled connection")


_BACKEND_PID = "memalpha_backend_pid"


def _track_backends(engine: AsyncEngine, pids: set[int]) -> None:
    """Keep `pids` equal to the server pids of the pool's open connections (Postgres)."""

    def connected(dbapi_connection: Any, record: Any) -> None:
        pid = record.info[_BACKEND_PID] = dbapi_connection.driver_connection.pgconn.backend_pid
        pids.add(pid)

    def closed(_dbapi_connection: Any, record: Any) -> None:
        pids.discard(record.info.pop(_BACKEND_PID, None))

    event.listen(engine.sync_engine, "connect", connected)
    event.listen(engine.sync_engine.pool, "close", closed)


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = async_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        options: dict[str, Any] = {}
        if self.dialect == "postgresql":
            options.update(pool_size=pool_size)
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        # Server pids of this pool's connections: a notification they send names one of them.
        self.backend_pids: set[int] = set()
        if self.dialect == "postgresql":
            event.listen(self.engine.sync_engine.pool, "checkout", _pg_checkout)
            _track_backends(self.engine, self.backend_pids)
        self.outage = OutageLog()
        # A new connection after an outage is the recovery (the pool drops the broken ones).
        event.listen(self.engine.sync_engine, "connect", lambda *_: self.outage.reconnected())
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_connect)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        self._reader = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        self._writer = async_sessionmaker(self._write_engine, expire_on_commit=False)
        # Statements without BEGIN/COMMIT (Postgres): for a lone statement, two round trips fewer.
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._autocommit = async_sessionmaker(self._autocommit_engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._reader() as session, session.begin():
            yield session

    @asynccontextmanager
    async def lookup(self) -> AsyncIterator[AsyncSession]:
        """For one statement that needs no snapshot shared with another: on Postgres it runs outside
        a transaction (each statement sees what was committed when it started), so the request pays
        one round trip instead of three. SQLite (local, no round trips) uses `read`."""
        if self.is_sqlite:
            async with self.read() as session:
                yield session
            return
        async with self._autocommit() as session:
            yield session

    @asynccontextmanager
    async def write_one(self) -> AsyncIterator[AsyncSession]:
        """For one write statement that is atomic by itself (an `UPDATE … RETURNING` that reads and
        writes in one go): on Postgres it runs outside a transaction block, so it pays one round trip
        instead of three. SQLite uses `write` (the write lock taken up front)."""
        if self.is_sqlite:
            async with self.write() as session:
                yield session
            return
        async with self._autocommit() as session:
            yield session

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One transaction that commits on success and rolls back on any exception."""
        async with self._writing(), self._writer() as session, session.begin():
            yield session

    @asynccontextmanager
    async def write_connection(self) -> AsyncIterator[AsyncConnection]:
        """`write()` on a plain connection (no ORM session)."""
        async with self._writing(), self._write_engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def read_connection(self) -> AsyncIterator[AsyncConnection]:
        """`read()` on a plain connection (no ORM session)."""
        async with self.engine.begin() as connection:
            yield connection

    @asynccontextmanager
    async def autocommit_connection(self) -> AsyncIterator[AsyncConnection]:
        """A plain connection without BEGIN/COMMIT (Postgres): each statement commits by itself, so
        only what one statement does is atomic. For statements that check by themselves what they
        rely on (the worker's commit, `ChunkQueue.complete_at_once`)."""
        async with self._autocommit_engine.connect() as connection:
            yield connection

    def _writing(self) -> AbstractAsyncContextManager[object]:
        """What a write transaction holds first: SQLite's in-process writer lock (see the top)."""
        return self._write_lock or nullcontext()

    async def dispose(self) -> None:
        await self.engine.dispose()
