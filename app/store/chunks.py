"""The chunk log: lookups the ingest path, the workers and the API share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import Chunk
from app.store.sessions import SessionKey

OPEN_STATUSES = ("pending", "processing")
FINAL_STATUSES = ("done", "failed")


def _of(key: SessionKey) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (Chunk.tenant_id == key[0], Chunk.session_id == key[1])


async def get(db: AsyncSession, key: SessionKey, seq: int) -> Chunk | None:
    return (await db.execute(select(Chunk).where(*_of(key), Chunk.seq == seq))).scalar_one_or_none()


async def by_seqs(db: AsyncSession, key: SessionKey, seqs: Sequence[int]) -> dict[int, Chunk]:
    if not seqs:
        return {}
    rows = (await db.execute(select(Chunk).where(*_of(key), Chunk.seq.in_(seqs)))).scalars()
    return {row.seq: row for row in rows}


async def by_idempotency_key(db: AsyncSession, key: SessionKey, idempotency_key: str) -> list[Chunk]:
    """Every piece accepted under `idempotency_key`, in order."""
    query = select(Chunk).where(*_of(key), Chunk.idempotency_key == idempotency_key).order_by(Chunk.part)
    return list((await db.execute(query)).scalars())


async def head(db: AsyncSession, key: SessionKey) -> Chunk | None:
    """The first chunk not yet done: the only one a worker may process (strict seq order)."""
    query = (
        select(Chunk)
        .where(*_of(key), Chunk.status.in_((*OPEN_STATUSES, "failed")))
        .order_by(Chunk.seq)
        .limit(1)
    )
    return (await db.execute(query)).scalar_one_or_none()


async def page(
    db: AsyncSession, key: SessionKey, *, status: str | None, after_seq: int, limit: int
) -> list[Chunk]:
    query = select(Chunk).where(*_of(key), Chunk.seq > after_seq).order_by(Chunk.seq).limit(limit)
    if status is not None:
        query = query.where(Chunk.status == status)
    return list((await db.execute(query)).scalars())


async def all_for_session(db: AsyncSession, key: SessionKey) -> list[Chunk]:
    return list((await db.execute(select(Chunk).where(*_of(key)).order_by(Chunk.seq))).scalars())


async def open_count(db: AsyncSession) -> int:
    """Accepted chunks not yet done or failed, over all sessions (the pending gauge)."""
    query = select(func.count()).select_from(Chunk).where(Chunk.status.in_(OPEN_STATUSES))
    return int((await db.execute(query)).scalar_one())


def chunk_dict(row: Chunk) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "status": row.status,
        "content": row.content,
        "timestamp": row.timestamp.isoformat() if row.timestamp else None,
        "idempotency_key": row.idempotency_key,
        "part": row.part,
        "metadata": row.meta,
        "attempts": row.attempts,
        "error": row.error,
        "usage": row.usage,
        "policy": row.policy,
        "model": row.model,
        "accepted_at": row.accepted_at.isoformat(),
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "done_at": row.done_at.isoformat() if row.done_at else None,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
    }
