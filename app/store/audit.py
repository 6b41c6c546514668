"""The operations audit log: one row per operation a policy, a user or an import asked for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import CTE, Exists, Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.contracts.schemas import OperationRecord
from app.memory import OpResult
from app.store.models import OperationLog
from app.store.sessions import SessionKey
from app.store.sql import Executor, json_rows, to_json

Actor = Literal["policy", "user", "import"]

_TABLE = cast(Table, OperationLog.__table__)
_INSERT = _TABLE.insert()  # built once: every chunk writes audit rows
# Bounded columns: a model may emit any string as a tool name or memory type.
_TOOL_LENGTH = 64
_ID_LENGTH = 32


def rows(
    key: SessionKey,
    results: Sequence[OpResult],
    *,
    actor: Actor,
    now: datetime,
    chunk_seq: int | None = None,
    policy: str | None = None,
    model: str | None = None,
) -> list[dict[str, object]]:
    """The audit rows of `results`, with every column of `ROW_COLUMNS`."""
    return [
        {
            "tenant_id": key[0],
            "session_id": key[1],
            "chunk_seq": chunk_seq,
            "actor": actor,
            "policy": policy,
            "model": model,
            "tool": result.tool[:_TOOL_LENGTH],
            "memory_type": result.memory_type[:_TOOL_LENGTH],
            "item_id": result.item_id[:_ID_LENGTH] if result.item_id else None,
            "status": result.status,
            "before": result.before,
            "after": result.after,
            "error": result.error,
            "truncated": result.truncated,
            "created_at": now,
        }
        for result in results
    ]


async def record(
    db: Executor,
    key: SessionKey,
    results: Sequence[OpResult],
    *,
    actor: Actor,
    now: datetime,
    chunk_seq: int | None = None,
    policy: str | None = None,
    model: str | None = None,
) -> None:
    await insert(
        db, rows(key, results, actor=actor, now=now, chunk_seq=chunk_seq, policy=policy, model=model)
    )


async def insert(db: Executor, logged: Sequence[dict[str, object]]) -> None:
    """Write audit rows made by `rows`."""
    if logged:
        await db.execute(_INSERT, list(logged))


# The columns `rows` fills (all but the generated id).
ROW_COLUMNS = tuple(column.name for column in _TABLE.c if column.name != "id")
_JSON = "audit_rows"


def insert_cte(applied: Exists) -> CTE:
    """Audit rows written by one statement (Postgres): an INSERT that reads them from a JSON parameter
    (`rows_json`) and writes only where `applied` holds."""
    bound = json_rows(_JSON, *(_TABLE.c[name] for name in ROW_COLUMNS))
    return (
        _TABLE.insert()
        .from_select(ROW_COLUMNS, select(*bound.c).where(applied))
        .returning(_TABLE.c.id)
        .cte("audit_inserted")
    )


def rows_json(logged: Sequence[dict[str, object]]) -> dict[str, str]:
    """The parameter of `insert_cte` for `rows`' output."""
    return {_JSON: to_json(logged)}


@dataclass(frozen=True)
class Logged:
    """An audit row as an ingest response shows it (`LOGGED_COLUMNS`, in this order)."""

    tool: str
    memory_type: str
    item_id: str | None
    status: str
    before: str | None
    after: str | None
    error: str | None


LOGGED_COLUMNS = (
    OperationLog.tool,
    OperationLog.memory_type,
    OperationLog.item_id,
    OperationLog.status,
    OperationLog.before,
    OperationLog.after,
    OperationLog.error,
)


async def page(db: AsyncSession, key: SessionKey, *, after_id: int, limit: int) -> list[OperationLog]:
    query = (
        select(OperationLog)
        .where(
            OperationLog.tenant_id == key[0], OperationLog.session_id == key[1], OperationLog.id > after_id
        )
        .order_by(OperationLog.id)
        .limit(limit)
    )
    return list((await db.execute(query)).scalars())


async def all_for_session(db: AsyncSession, key: SessionKey) -> list[OperationLog]:
    query = (
        select(OperationLog)
        .where(OperationLog.tenant_id == key[0], OperationLog.session_id == key[1])
        .order_by(OperationLog.id)
    )
    return list((await db.execute(query)).scalars())


def operation_record(row: OperationLog) -> OperationRecord:
    """An audit-log entry as the operations log and the export show it."""
    return OperationRecord(
        id=row.id,
        at=row.created_at,
        actor=row.actor,
        policy=row.policy,
        model=row.model,
        chunk_seq=row.chunk_seq,
        tool=row.tool,
        memory_type=row.memory_type,
        memory_id=row.item_id,
        status=row.status,
        before=row.before,
        after=row.after,
        error=row.error,
        truncated=row.truncated,
    )
