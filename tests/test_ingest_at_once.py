"""A request without idempotency keys accepted by one statement without a transaction (Postgres,
`ChunkQueue._accept`): seqs in order and nothing lost when requests race for the session's row, a
session deleted, blocked or in backoff while the statement waits for that row behaves as with the
transaction, and other processes still hear of the new chunks (the INSERT's trigger)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from store_helpers import chunk_rows, running, sent_statements

from app.ingest.wakeups import CHANNEL
from app.service import ChunkIn, MemoryService
from app.store.models import Session
from app.store.types import utcnow

pytestmark = pytest.mark.postgres

T = "tenant-once"


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _statements(service: MemoryService) -> Any:
    """The statements the service sends, but the read of the chunks' outcomes that answers a request
    and the periodic backlog count."""
    return sent_statements(service, unless=("SELECT chunks.seq, chunks.status",))


@asynccontextmanager
async def _row_locked(url: str, session_id: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A transaction holding the session's row lock; it commits on exit."""
    async with await psycopg.AsyncConnection.connect(_conninfo(url)) as conn:
        await conn.execute(
            "SELECT 1 FROM sessions WHERE tenant_id = %s AND id = %s FOR UPDATE", (T, session_id)
        )
        yield conn
        await conn.commit()


async def _until_waiting(url: str, n: int) -> None:
    """Until `n` backends wait for a lock (the ingests queued behind `_row_locked`)."""
    async with await psycopg.AsyncConnection.connect(_conninfo(url), autocommit=True) as conn:
        async with asyncio.timeout(10):
            while True:
                cursor = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
                row = await cursor.fetchone()
                if row is not None and row[0] >= n:
                    return
                await asyncio.sleep(0.02)


async def test_racing_requests_keep_order_and_lose_nothing(migrated_pg_url: str) -> None:
    """Two requests wait on the row while a third transaction takes seqs; each gets a gap-free run
    of seqs after the newest `next_seq`, in one statement each, and every chunk is in the log."""
    async with running(migrated_pg_url, run_workers=False) as service:
        await service.ingestion.ingest(T, "s", [ChunkIn("c0")], wait=False)  # creates the session
        async with _statements(service) as sent:
            async with _row_locked(migrated_pg_url, "s") as lock:
                racing = [
                    asyncio.create_task(
                        service.ingestion.ingest(
                            T, "s", [ChunkIn(f"{name}{n}") for n in range(3)], wait=False
                        )
                    )
                    for name in ("a", "b")
                ]
                await _until_waiting(migrated_pg_url, 2)
                # Another ingest's seqs, committed while the two wait: they must be re-read.
                await lock.execute(
                    "INSERT INTO chunks (tenant_id, session_id, seq, content, part, status, attempts, accepted_at)"
                    " VALUES (%s, 's', 2, 'x', 0, 'pending', 0, now())",
                    (T,),
                )
                await lock.execute("UPDATE sessions SET next_seq = 3 WHERE tenant_id = %s AND id = 's'", (T,))
            outcomes = await asyncio.gather(*racing)
        rows = await chunk_rows(service, T, "s")
    assert sorted(sent) == [("WITH reserved AS", True)] * 2
    runs = [[chunk.seq for chunk in outcome.chunks] for outcome in outcomes]
    assert sorted(runs) == [[3, 4, 5], [6, 7, 8]]
    by_seq = {row.seq: row.content for row in rows}
    assert sorted(by_seq) == list(range(1, 9))
    for name, run in zip(("a", "b"), runs, strict=True):
        assert [by_seq[seq] for seq in run] == [f"{name}{n}" for n in range(3)]


async def test_a_session_deleted_while_the_statement_waits_is_created_again(migrated_pg_url: str) -> None:
    async with running(migrated_pg_url, run_workers=False) as service:
        await service.ingestion.ingest(T, "s", [ChunkIn("c0"), ChunkIn("c1")], wait=False)
        async with _statements(service) as sent:
            async with _row_locked(migrated_pg_url, "s") as lock:
                waiting = asyncio.create_task(service.ingestion.ingest(T, "s", [ChunkIn("new")], wait=False))
                await _until_waiting(migrated_pg_url, 1)
                await lock.execute("DELETE FROM sessions WHERE tenant_id = %s AND id = 's'", (T,))
            outcome = await waiting
        rows = await chunk_rows(service, T, "s")
        async with service.db.read() as db:
            place = (await db.execute(select(Session.next_seq, Session.ready_at))).one()
    # The one statement found no row and wrote nothing; the transaction created the session.
    assert sent[0] == ("WITH reserved AS", True) and not sent[1][1]
    assert [chunk.seq for chunk in outcome.chunks] == [1]
    assert [(row.seq, row.content) for row in rows] == [(1, "new")]
    assert place.next_seq == 2 and place.ready_at is not None


@pytest.mark.parametrize("change", ["blocked", "backoff"])
async def test_a_session_blocked_or_in_backoff_while_the_statement_waits_stays_so(
    migrated_pg_url: str, change: str
) -> None:
    later = utcnow() + timedelta(hours=1)
    async with running(migrated_pg_url, run_workers=False) as service:
        await service.ingestion.ingest(T, "s", [ChunkIn("c0")], wait=False)
        async with _statements(service) as sent:
            async with _row_locked(migrated_pg_url, "s") as lock:
                waiting = asyncio.create_task(service.ingestion.ingest(T, "s", [ChunkIn("new")], wait=False))
                await _until_waiting(migrated_pg_url, 1)
                values = (1, None) if change == "blocked" else (None, later)
                await lock.execute(
                    "UPDATE sessions SET blocked_by_seq = %s, ready_at = %s WHERE tenant_id = %s AND id = 's'",
                    (*values, T),
                )
            outcome = await waiting
        async with service.db.read() as db:
            place = (
                await db.execute(select(Session.blocked_by_seq, Session.ready_at, Session.next_seq))
            ).one()
    assert sent == [("WITH reserved AS", True)]
    assert [chunk.seq for chunk in outcome.chunks] == [2] and place.next_seq == 3
    assert (place.blocked_by_seq, place.ready_at) == ((1, None) if change == "blocked" else (None, later))


async def test_other_processes_hear_of_chunks_accepted_by_one_statement(migrated_pg_url: str) -> None:
    async with (
        await psycopg.AsyncConnection.connect(_conninfo(migrated_pg_url), autocommit=True) as listener,
        running(migrated_pg_url, run_workers=False) as service,
    ):
        await service.ingestion.ingest(T, "s", [ChunkIn("c0")], wait=False)  # creates the session
        await listener.execute(f"LISTEN {CHANNEL}")
        async with _statements(service) as sent:
            await service.ingestion.ingest(T, "s", [ChunkIn("c1"), ChunkIn("c2")], wait=False)
        async with asyncio.timeout(10):
            heard = [notification.payload async for notification in listener.notifies(stop_after=1)]
    assert sent == [("WITH reserved AS", True)]
    assert heard == ["work"]


async def test_chunks_round_trip_exactly_through_the_json_parameter(migrated_pg_url: str) -> None:
    """What the one statement stores is what the request held: text, timestamps and metadata."""
    texts = [
        'quotes \' " and \\ backslashes \\n, JSON {"a": [1]} and SQL \'); DROP TABLE chunks; --',
        "lines\nand\ttabs, accents éàü, CJK 記憶, emoji 🧠, combining e\u0301, RTL עברית",
        "x" * 2_000,
    ]
    when = utcnow().replace(microsecond=123456)
    metadata = {"nested": {"list": [1, 2.5, None, True]}, "quote": "'\""}
    async with running(migrated_pg_url, run_workers=False) as service:
        await service.ingestion.ingest(T, "s", [ChunkIn("c0")], wait=False)  # creates the session
        async with _statements(service) as sent:
            await service.ingestion.ingest(
                T, "s", [ChunkIn(text, timestamp=when, metadata=metadata) for text in texts], wait=False
            )
        rows = await chunk_rows(service, T, "s")
    assert sent == [("WITH reserved AS", True)]
    assert [(row.seq, row.content, row.timestamp, row.meta, row.part) for row in rows[1:]] == [
        (seq, text, when, metadata, 0) for seq, text in zip((2, 3, 4), texts, strict=True)
    ]
