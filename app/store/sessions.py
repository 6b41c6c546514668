"""Tenants and session rows: creation on first use, locking, summaries, erasure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.contracts.schemas import SessionOut
from app.memory import MemoryState
from app.store.models import Chunk, ChunkStatus, MemoryItem, MemoryRemoval, OperationLog, Session, Tenant
from app.store.sql import insert_ignore

SessionKey = tuple[str, str]  # (tenant_id, session_id)

CHUNK_STATUSES = tuple(status.value for status in ChunkStatus)

SESSIONS = cast(Table, Session.__table__)


@dataclass(frozen=True)
class LeasedSession:
    """A session row as the ingest worker reads it under its lease: its identity and its memory's
    scalars as plain columns. The worker reads and writes the row with Core statements: an ORM entity
    costs its loading, identity map and unit-of-work flush on every chunk (docs/results/benchmarks.md
    (l))."""

    tenant_id: str
    id: str
    created_at: datetime  # with the id, the identity of a session (one deleted and recreated differs)
    version: int
    core: str
    core_truncated: bool
    next_item: int

    def committed(self, state: MemoryState) -> LeasedSession:
        """The row once `state` (the memory written over it) is committed."""
        return replace(self, **memory_values(state))


# `LeasedSession`'s columns, in its field order.
LEASED_COLUMNS = tuple(SESSIONS.c[name] for name in LeasedSession.__dataclass_fields__)
# What the memory helpers read of a session: the ORM row (API paths) or the worker's plain row.
SessionRow = Session | LeasedSession


def memory_values(state: MemoryState) -> dict[str, Any]:
    """A memory's scalars as the session row's column values."""
    return {
        "core": state.core,
        "core_truncated": state.core_truncated,
        "version": state.version,
        "next_item": state.next_item,
    }


async def ensure_tenant(db: AsyncSession, tenant_id: str, now: datetime) -> None:
    await insert_ignore(db, Tenant, {"id": tenant_id, "created_at": now})


# Statements on every chunk's path, built once (see `app/store/chunks.py`).
_SESSION = select(Session).where(Session.tenant_id == bindparam("tenant"), Session.id == bindparam("session"))
_SESSION_FOR_UPDATE = _SESSION.with_for_update()


async def get_session(db: AsyncSession, key: SessionKey, *, for_update: bool = False) -> Session | None:
    """The session row; `for_update` locks it (Postgres) until the transaction ends."""
    query = _SESSION_FOR_UPDATE if for_update else _SESSION
    return (await db.execute(query, {"tenant": key[0], "session": key[1]})).scalar_one_or_none()


async def lock_or_create_session(db: AsyncSession, key: SessionKey, now: datetime) -> Session:
    """The locked session row, created (with its tenant) on first use; concurrent creators meet on
    the primary key and all end up locking the one row."""
    row = await get_session(db, key, for_update=True)
    if row is not None:  # the common case: no upserts (a session's tenant exists)
        return row
    await ensure_tenant(db, key[0], now)
    await insert_ignore(
        db,
        Session,
        {
            "tenant_id": key[0],
            "id": key[1],
            "core": "",
            "core_truncated": False,
            "version": 0,
            "next_seq": 1,
            "next_item": 0,
            "created_at": now,
            "updated_at": now,
        },
    )
    row = await get_session(db, key, for_update=True)
    if row is None:  # the upsert above guarantees a row; anything else is a database fault
        raise RuntimeError(f"session {key!r} missing right after its upsert")
    return row


async def delete_session(db: AsyncSession, key: SessionKey) -> bool:
    tenant, session_id = key
    for model in (OperationLog, MemoryItem, MemoryRemoval, Chunk):
        await db.execute(delete(model).where(model.tenant_id == tenant, model.session_id == session_id))
    result = await db.execute(delete(Session).where(Session.tenant_id == tenant, Session.id == session_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SessionCounts:
    chunks: dict[str, int]
    items: dict[str, int]


async def counts(db: AsyncSession, tenant_id: str, session_ids: Sequence[str]) -> dict[str, SessionCounts]:
    """Chunk counts by status and item counts by kind, for a page of sessions in two queries."""
    out = {
        sid: SessionCounts({s: 0 for s in CHUNK_STATUSES}, {"semantic": 0, "episodic": 0})
        for sid in session_ids
    }
    if not session_ids:
        return out
    chunk_rows = await db.execute(
        select(Chunk.session_id, Chunk.status, func.count())
        .where(Chunk.tenant_id == tenant_id, Chunk.session_id.in_(session_ids))
        .group_by(Chunk.session_id, Chunk.status)
    )
    for session_id, status, count in chunk_rows:
        out[session_id].chunks[status] = count
    item_rows = await db.execute(
        select(MemoryItem.session_id, MemoryItem.kind, func.count())
        .where(MemoryItem.tenant_id == tenant_id, MemoryItem.session_id.in_(session_ids))
        .group_by(MemoryItem.session_id, MemoryItem.kind)
    )
    for session_id, kind, count in item_rows:
        out[session_id].items[kind] = count
    return out


def summary(row: Session, counted: SessionCounts, *, memory_tokens: int) -> SessionOut:
    return SessionOut(
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
        next_seq=row.next_seq,
        chunks=counted.chunks,  # type: ignore[arg-type]  # keyed by every ChunkStatus value
        items=counted.items,
        blocked_by_seq=row.blocked_by_seq,
        core_truncated=row.core_truncated,
        memory_tokens=memory_tokens,
    )


async def list_sessions(db: AsyncSession, tenant_id: str, *, limit: int, offset: int) -> list[Session]:
    query = (
        select(Session)
        .where(Session.tenant_id == tenant_id)
        .order_by(Session.created_at, Session.id)
        .limit(limit)
        .offset(offset)
    )
    return list((await db.execute(query)).scalars())
