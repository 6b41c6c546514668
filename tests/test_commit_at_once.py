"""The worker's commit as one statement on Postgres (`ChunkQueue.peek` + `complete_at_once`): it writes
nothing when the lease was lost or the session row changed after the read, also when the change lands
while the statement waits for the row's lock; rows with awkward text go through its JSON parameters
exactly; a commit whose statement wrote nothing is applied once by the locked commit; and neither
statement scans the items table, whatever the memory's size."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from explain import item_scans
from psycopg import AsyncCursor, AsyncRawCursor
from sqlalchemy import event, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from store_helpers import running

from app.ingest.queue import ChunkQueue, Seen
from app.ingest.views import Views
from app.ingest.worker import Step, Worker, WorkerConfig
from app.memory import MemoryKind, MemoryState, OpResult, Tool
from app.policy.backend import PolicyReply, Usage
from app.policy.parser import ToolCall
from app.service import ChunkIn, MemoryService
from app.store import audit
from app.store.memory import ItemChanges, insert_items, target_filter, target_query
from app.store.models import Chunk, ChunkStatus, MemoryItem, MemoryRemoval, OperationLog, Session
from app.store.types import utcnow

pytestmark = pytest.mark.postgres

T = "tenant-once"
KEY = (T, "s")
OWNER = "w"

# Quotes, backslashes, JSON and SQL look-alikes, newlines, tabs, non-ASCII (accents, CJK, an emoji,
# a combining mark, a right-to-left script), the empty string and a very long text.
AWKWARD = [
    "she said \"no\" and 'yes'",
    "back\\slash \\n not a newline, \\u0041 not an A",
    '{"json": [1, 2], "null": null}',
    "'); DROP TABLE memory_items; --",
    "line one\nline two\r\nline three\ttabbed",
    "café 中文 🎉 e\u0301 שלום",
    "",
    "long " + "x" * 200_000,
]


async def _claimed(service: MemoryService) -> tuple[Worker, Step]:
    await service.ingestion.ingest(T, "s", [ChunkIn("Fact: Zorg owns 3 boats.")], wait=False)
    worker = Worker(
        queue=service.queue,
        policy=service.policy,
        applier=service.applier,
        config=WorkerConfig(poll_s=0.05, attempt_timeout_s=30.0),
        owner=OWNER,
        views=Views(),
    )
    claimed = await worker.claim(4)
    assert [key for key, _ in claimed.started] == [KEY]
    return worker, claimed.started[0][1]


async def _peek(queue: ChunkQueue, seq: int) -> Seen:
    async with queue.db.autocommit_connection() as db:
        seen = await queue.peek(db, KEY, seq, OWNER)
    assert seen is not None
    return seen


async def _complete(
    queue: ChunkQueue,
    seen: Seen,
    items: ItemChanges,
    logged: list[dict[str, Any]],
    *,
    plans: list[Any] | None = None,
) -> Any:
    """`complete_at_once` on `seen`; with `plans`, its statements' plans are added to them."""
    memory = MemoryState(core="core after", version=seen.held.session.version + 1, next_item=7)
    async with queue.db.autocommit_connection() as connection, _explained(connection, plans) as db:
        return await queue.complete_at_once(
            db,
            KEY,
            seen,
            OWNER,
            utcnow(),
            memory=memory,
            items=items,
            logged=logged,
            policy="p",
            model="m",
            usage={"calls": 1},
            start_next=True,
        )


def _item(item_id: str, content: str, *, at: datetime, occurred: datetime | None = None) -> dict[str, Any]:
    return {
        "tenant_id": T,
        "session_id": "s",
        "item_id": item_id,
        "kind": "semantic",
        "content": content,
        "position": int(item_id.removeprefix("m")),
        "created_at": at,
        "updated_at": at,
        "source_seq": 1,
        "occurred_at": occurred,
        "cues": content[:100],
        "version": 1,
    }


def _changes(at: datetime) -> tuple[ItemChanges, list[dict[str, Any]]]:
    items = ItemChanges(
        fresh=[_item("m1", "a new fact", at=at)],
        edited=[],
        gone=[],
    )
    logged = [
        {
            "tenant_id": T,
            "session_id": "s",
            "chunk_seq": 1,
            "actor": "policy",
            "policy": "p",
            "model": "m",
            "tool": "memory_insert",
            "memory_type": "semantic",
            "item_id": "m1",
            "status": "ok",
            "before": None,
            "after": "a new fact",
            "error": None,
            "truncated": False,
            "created_at": at,
        }
    ]
    return items, logged


async def _written(service: MemoryService) -> tuple[Any, ...]:
    """What a commit writes: the chunk's status, the session row's memory and lease, items, audit rows."""
    async with service.db.read() as db:
        chunk = (await db.execute(select(Chunk.status, Chunk.done_at).where(Chunk.tenant_id == T))).one()
        row = (
            await db.execute(
                select(Session.core, Session.version, Session.lease_owner).where(Session.tenant_id == T)
            )
        ).one()
        items = (await db.execute(select(func.count()).select_from(MemoryItem))).scalar_one()
        logged = (await db.execute(select(func.count()).select_from(OperationLog))).scalar_one()
    return tuple(chunk), tuple(row), items, logged


async def test_a_lost_lease_writes_nothing(migrated_pg_url: str) -> None:
    async with running(migrated_pg_url, run_workers=False) as service:
        _worker, step = await _claimed(service)
        seen = await _peek(service.queue, step.seq)
        async with service.db.write() as db:  # the lease expired and another worker took it
            await db.execute(update(Session).where(Session.tenant_id == T).values(lease_owner="other"))
        before = await _written(service)
        assert await _complete(service.queue, seen, *_changes(utcnow())) is None
        assert await _written(service) == before
        async with service.db.autocommit_connection() as db:  # and the worker learns it lost the lease
            assert await service.queue.peek(db, KEY, step.seq, OWNER) is None
    assert before[0][0] == ChunkStatus.PROCESSING and before[1][2] == "other" and before[2:] == (0, 0)


async def test_a_row_changed_after_the_read_writes_nothing(migrated_pg_url: str) -> None:
    async with running(migrated_pg_url, run_workers=False) as service:
        _worker, step = await _claimed(service)
        seen = await _peek(service.queue, step.seq)
        await service.queue.heartbeat(KEY, OWNER)  # still our lease, but the row is a newer version
        before = await _written(service)
        assert await _complete(service.queue, seen, *_changes(utcnow())) is None
        assert await _written(service) == before
        # Read again, the same commit goes through.
        assert await _complete(service.queue, await _peek(service.queue, step.seq), *_changes(utcnow()))
        after = await _written(service)
    assert after[0][0] == ChunkStatus.DONE and after[1][:2] == ("core after", 1) and after[2:] == (1, 1)


async def test_a_change_that_commits_while_the_statement_waits_for_the_lock_writes_nothing(
    migrated_pg_url: str,
) -> None:
    """READ COMMITTED re-checks the lease check's WHERE (the row version) on the row that the
    transaction holding the lock committed."""
    async with running(migrated_pg_url, run_workers=False) as service:
        _worker, step = await _claimed(service)
        seen = await _peek(service.queue, step.seq)
        before = await _written(service)
        async with service.db.engine.connect() as other:
            transaction = await other.begin()
            await other.execute(
                update(Session)
                .where(Session.tenant_id == T)
                .values(lease_until=utcnow() + timedelta(minutes=5))
            )
            commit = asyncio.create_task(_complete(service.queue, seen, *_changes(utcnow())))
            await asyncio.sleep(0.3)
            assert not commit.done()  # waiting for the row's lock
            waiting = await other.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            )
            assert waiting.scalar_one() >= 1
            await transaction.commit()
        assert await commit is None
        assert await _written(service) == before


async def test_awkward_text_round_trips_exactly(migrated_pg_url: str) -> None:
    at = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)
    occurred = datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    async with running(migrated_pg_url, run_workers=False) as service:
        _worker, step = await _claimed(service)
        async with service.db.write_connection() as db:  # older items: one to edit, one to delete
            await insert_items(db, [_item("m90", "to edit", at=at), _item("m91", "to delete", at=at)])
        seen = await _peek(service.queue, step.seq)
        fresh = [
            _item(f"m{n}", content, at=at, occurred=occurred if n % 2 else None)
            for n, content in enumerate(AWKWARD)
        ]
        edited = [
            {
                "tenant_id": T,
                "session_id": "s",
                "item_id": "m90",
                "content": AWKWARD[5] + AWKWARD[4],
                "cues": AWKWARD[0],
                "updated_at": at + timedelta(microseconds=1),
                "occurred_at": occurred,
                "version": 2,
            }
        ]
        gone = [{"tenant_id": T, "session_id": "s", "item_id": "m91", "version": 2}]
        results = [
            OpResult(
                tool="memory_update",
                memory_type="semantic",
                status="ok",
                item_id=f"m{n}",
                before=AWKWARD[-1 - n],
                after=content,
                error=AWKWARD[n - 1] if n else "",
                truncated=n % 2 == 1,
            )
            for n, content in enumerate(AWKWARD)
        ]
        logged = audit.rows(KEY, results, actor="policy", now=at, chunk_seq=step.seq, policy="p", model="m")
        assert await _complete(service.queue, seen, ItemChanges(fresh, edited, gone), logged)
        async with service.db.read() as db:
            items = {
                row["item_id"]: row
                for row in (
                    await db.execute(select(MemoryItem.__table__).where(MemoryItem.tenant_id == T))
                ).mappings()
            }
            stored = [
                {name: row[name] for name in audit.ROW_COLUMNS}
                for row in (
                    await db.execute(select(OperationLog.__table__).order_by(OperationLog.id))
                ).mappings()
            ]
            removed = (await db.execute(select(MemoryRemoval.item_id, MemoryRemoval.version))).all()
    for row in fresh:
        assert dict(items[str(row["item_id"])]) == row
    assert {name: items["m90"][name] for name in edited[0]} == edited[0]
    assert "m91" not in items and removed == [("m91", 2)]
    assert stored == logged


async def test_a_commit_whose_statement_wrote_nothing_is_applied_once_by_the_locked_commit(
    migrated_pg_url: str,
) -> None:
    async with running(migrated_pg_url, run_workers=False) as service:
        worker, step = await _claimed(service)
        queue = service.queue
        peek = queue.peek
        statements: list[bool] = []

        async def peek_then_beat(*args: Any, **kwargs: Any) -> Seen | None:
            seen = await peek(*args, **kwargs)
            await queue.heartbeat(KEY, OWNER)  # lands between the read and the write
            return seen

        complete_at_once = queue.complete_at_once

        async def recorded(*args: Any, **kwargs: Any) -> Any:
            done = await complete_at_once(*args, **kwargs)
            statements.append(done is not None)
            return done

        queue.peek = peek_then_beat  # type: ignore[method-assign]
        queue.complete_at_once = recorded  # type: ignore[method-assign]
        reply = PolicyReply(
            calls=[ToolCall(Tool.INSERT, {"memory_type": "semantic", "content": AWKWARD[5]})],
            raw_text="",
            usage=Usage(prompt_tokens=1, completion_tokens=1),
            model="m",
            latency_s=0.0,
        )
        outcome = await worker._commit(KEY, step, reply, chain=True)
        async with service.db.read() as db:
            contents = (await db.execute(select(MemoryItem.content))).scalars().all()
            ops = (await db.execute(select(func.count()).select_from(OperationLog))).scalar_one()
            status = (await db.execute(select(Chunk.status))).scalar_one()
    assert statements == [False]  # the one statement found the row changed and wrote nothing…
    assert outcome.value == "released"  # …and the locked commit applied the reply, once
    assert contents == [AWKWARD[5]] and ops == 1 and status == ChunkStatus.DONE


@asynccontextmanager
async def _explained(db: AsyncConnection, plans: list[Any] | None) -> AsyncIterator[AsyncConnection]:
    """`db`; with `plans`, the statements sent on it while open are recorded, and on leaving the plan of
    each (`EXPLAIN (FORMAT JSON)` of the statement as sent, with its parameters) is added to `plans`."""
    if plans is None:
        yield db
        return
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    assert db.sync_connection is not None
    event.listen(db.sync_connection, "before_cursor_execute", record)
    try:
        yield db
    finally:
        event.remove(db.sync_connection, "before_cursor_execute", record)
    driver = (await db.get_raw_connection()).driver_connection
    assert driver is not None
    for statement, parameters in sent:
        # the statement as sent: `$n` placeholders from `app.store.driver`, `%(name)s` from SQLAlchemy
        raw = not isinstance(parameters, dict)
        explained = AsyncRawCursor(driver) if raw else AsyncCursor(driver)
        await explained.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
        plans.append((await explained.fetchone())[0])  # type: ignore[index]


@pytest.mark.parametrize("analyzed", [False, True], ids=["without statistics", "with statistics"])
async def test_the_commit_reaches_items_by_index_whatever_the_memory_size(
    migrated_pg_url: str, analyzed: bool
) -> None:
    """Postgres guesses 100 rows for a JSON parameter of one or two: joined plainly to the items, the
    read's targets by content and the write's edits and deletes hashed every item of the table (8 ms a
    chunk at 10k items) instead of probing an index per named item. Without statistics (right after a
    bulk import, before autovacuum analyzes the table: the items here were written by this test) it
    took the session's key for selective and read all of the session's items through the
    (tenant, session, version) index to find the named ones."""
    at = utcnow()
    async with running(migrated_pg_url, run_workers=False) as service:
        _worker, step = await _claimed(service)
        await service.ingestion.ingest(T, "other", [ChunkIn("Another session.")], wait=False)
        async with service.db.write_connection() as db:  # this session's memory and another's
            if not analyzed:  # and no autovacuum gathering statistics in the meantime
                await db.execute(text("ALTER TABLE memory_items SET (autovacuum_enabled = false)"))
            await insert_items(db, [_item(f"m{n}", f"fact number {n}", at=at) for n in range(10, 5010)])
            await insert_items(
                db,
                [_item(f"m{n}", f"other fact {n}", at=at) | {"session_id": "other"} for n in range(10, 5010)],
            )
        if analyzed:
            async with service.db.engine.connect() as db:  # statistics, as autovacuum keeps them
                await db.execute(text("ANALYZE memory_items"))
                await db.commit()
        plans: list[Any] = []
        async with service.db.autocommit_connection() as connection, _explained(connection, plans) as db:
            seen = await service.queue.peek(
                db,
                KEY,
                step.seq,
                OWNER,
                {"m20"},
                {(MemoryKind.SEMANTIC, "fact number 30")},
            )
            assert seen is not None and {item[1] for item in seen.items} == {"m20", "m30"}
            # The same items as the locked commit (and SQLite) reads them.
            wanted = target_filter({"m20"}, {(MemoryKind.SEMANTIC, "fact number 30")})
            assert wanted is not None
            found = await db.execute(target_query(KEY, wanted))
            assert {record[1] for record in found} == {"m20", "m30"}
            edited = [
                {
                    "tenant_id": T,
                    "session_id": "s",
                    "item_id": "m40",
                    "content": "fact forty, edited",
                    "cues": "",
                    "updated_at": at,
                    "occurred_at": None,
                    "version": 2,
                }
            ]
            gone = [{"tenant_id": T, "session_id": "s", "item_id": "m50", "version": 2}]
            _, logged = _changes(at)
            items = ItemChanges([_item("m9", "a new fact", at=at)], edited, gone)
        assert await _complete(service.queue, seen, items, logged, plans=plans) is not None
        async with service.db.read() as db:
            query = select(MemoryItem.session_id, MemoryItem.content).where(MemoryItem.item_id == "m40")
            contents = {session: content for session, content in await db.execute(query)}
            count = (await db.execute(select(func.count()).select_from(MemoryItem))).scalar_one()
    assert contents == {"s": "fact forty, edited", "other": "other fact 40"}
    assert count == 2 * 5000  # one inserted, one deleted
    scans = [scan for plan in plans for scan in item_scans(plan[0]["Plan"])]
    # Each named item by an index on what names it (its id, or its content), never the session's items.
    assert scans and all("item_id" in cond or "content" in cond for _, _, cond in scans), scans
