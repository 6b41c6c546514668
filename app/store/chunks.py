"""The chunk log: lookups the ingest path, the workers and the API share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, ColumnElement, Select, Table, and_, any_, bindparam, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.contracts.schemas import ChunkRecord
from app.store import audit
from app.store.driver import fetch
from app.store.models import Chunk, ChunkStatus, OperationLog
from app.store.sessions import SessionKey
from app.store.sql import batched

OPEN_STATUSES = (ChunkStatus.PENDING, ChunkStatus.PROCESSING)
FINAL_STATUSES = (ChunkStatus.DONE, ChunkStatus.FAILED)
# A session's head is its first chunk in one of these (a failed one blocks it).
HEAD_STATUSES = (*OPEN_STATUSES, ChunkStatus.FAILED)


CHUNKS = cast(Table, Chunk.__table__)


@dataclass(frozen=True)
class QueuedChunk:
    """A chunk as the ingest worker reads it (plain columns, no ORM entity: see `LeasedSession`)."""

    seq: int
    status: str  # a ChunkStatus
    attempts: int
    error: str | None
    content: str
    timestamp: datetime | None
    request_id: str | None
    accepted_at: datetime
    started_at: datetime | None
    next_attempt_at: datetime | None


# `QueuedChunk`'s columns, in its field order.
QUEUED_COLUMNS = tuple(CHUNKS.c[name] for name in QueuedChunk.__dataclass_fields__)


def _of(key: SessionKey) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (Chunk.tenant_id == key[0], Chunk.session_id == key[1])


async def get(db: AsyncSession, key: SessionKey, seq: int) -> Chunk | None:
    return (await db.execute(select(Chunk).where(*_of(key), Chunk.seq == seq))).scalar_one_or_none()


# Statements on every chunk's path, built once: SQLAlchemy keeps a statement object's cache key,
# so a reused one skips rebuilding its expressions and that key (docs/results/benchmarks.md (j)).
_KEY = (Chunk.tenant_id == bindparam("tenant"), Chunk.session_id == bindparam("session"))
_HEAD = select(Chunk).where(*_KEY, Chunk.status.in_(HEAD_STATUSES)).order_by(Chunk.seq).limit(1)


def _outcomes_of(seqs: ColumnElement[bool]) -> Select[*tuple[Any, ...]]:
    """The chunks `seqs` selects (of the session `tenant`, `session`), each LEFT JOIN its policy
    operations, in order."""
    return (
        select(Chunk.seq, Chunk.status, Chunk.error, *audit.LOGGED_COLUMNS)
        .select_from(Chunk)
        .outerjoin(
            OperationLog,
            and_(
                OperationLog.tenant_id == Chunk.tenant_id,
                OperationLog.session_id == Chunk.session_id,
                OperationLog.chunk_seq == Chunk.seq,
                OperationLog.actor == "policy",
            ),
        )
        .where(*_KEY, seqs)
        .order_by(Chunk.seq, OperationLog.id)
    )


_OUTCOMES = _outcomes_of(Chunk.seq.in_(bindparam("seqs", expanding=True)))
# Postgres, for `fetch`: the seqs as one array parameter (an `expanding` IN list is rendered per call).
_OUTCOMES_AT_ONCE = _outcomes_of(Chunk.seq == any_(bindparam("seqs", type_=postgresql.ARRAY(BigInteger))))


@dataclass(frozen=True)
class Outcome:
    status: str  # a ChunkStatus
    error: str | None
    operations: list[audit.Logged]  # the policy's operations on the chunk, in the order they were applied


async def outcomes(db: AsyncSession, key: SessionKey, seqs: Sequence[int]) -> dict[int, Outcome]:
    """Status, error and policy operations of the given chunks: one statement per batch (each chunk
    LEFT JOIN its audit rows), so a chunk and its operations come from one snapshot even outside a
    transaction. Only those columns: a request's chunks can hold megabytes of content, and reading
    them back as ORM rows took ~60 ms of event-loop time for the largest request."""
    out: dict[int, Outcome] = {}
    for batch in batched(seqs):
        found = await db.execute(_OUTCOMES, {"tenant": key[0], "session": key[1], "seqs": list(batch)})
        _add_outcomes(out, found)
    return out


async def outcomes_at_once(db: AsyncConnection, key: SessionKey, seqs: Sequence[int]) -> dict[int, Outcome]:
    """`outcomes` of at most one batch of seqs as one statement on the driver connection (Postgres,
    `app.store.driver`)."""
    out: dict[int, Outcome] = {}
    _add_outcomes(
        out, await fetch(db, _OUTCOMES_AT_ONCE, {"tenant": key[0], "session": key[1], "seqs": seqs})
    )
    return out


def _add_outcomes(out: dict[int, Outcome], rows: Iterable[Sequence[Any]]) -> None:
    for seq, status, error, *operation in rows:
        outcome = out.get(seq)
        if outcome is None:
            outcome = out[seq] = Outcome(status, error, [])
        if operation[0] is not None:  # the tool; None: no operation (outer join)
            outcome.operations.append(audit.Logged(*operation))


async def by_idempotency_key(db: AsyncSession, key: SessionKey, idempotency_key: str) -> list[Chunk]:
    """Every piece accepted under `idempotency_key`, in order."""
    query = select(Chunk).where(*_of(key), Chunk.idempotency_key == idempotency_key).order_by(Chunk.part)
    return list((await db.execute(query)).scalars())


async def head(db: AsyncSession, key: SessionKey) -> Chunk | None:
    """The first chunk not yet done: the only one a worker may process (strict seq order)."""
    return (await db.execute(_HEAD, {"tenant": key[0], "session": key[1]})).scalar_one_or_none()


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


def chunk_record(row: Chunk) -> ChunkRecord:
    """A chunk as the chunk log and the export show it."""
    return ChunkRecord(
        seq=row.seq,
        status=row.status,  # type: ignore[arg-type]  # a ChunkStatus value
        content=row.content,
        timestamp=row.timestamp,
        idempotency_key=row.idempotency_key,
        request_id=row.request_id,
        part=row.part,
        metadata=row.meta,  # `metadata` is SQLAlchemy's on a mapped class
        attempts=row.attempts,
        error=row.error,
        usage=row.usage,
        policy=row.policy,
        model=row.model,
        accepted_at=row.accepted_at,
        started_at=row.started_at,
        done_at=row.done_at,
        next_attempt_at=row.next_attempt_at,
    )
