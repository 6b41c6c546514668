"""Accepting chunks into the durable log (ARCHITECTURE §5): seqs are assigned under the session row's
lock and the transaction commits before any policy call, so an accepted chunk is never lost."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.ingest.prepare import Piece
from app.ingest.wakeups import Wakeups, announce
from app.store import chunks
from app.store.database import Database
from app.store.models import Chunk
from app.store.sessions import SessionKey, lock_or_create_session


@dataclass(frozen=True)
class Accepted:
    seqs: list[int]  # the seqs of one input chunk (several when it was split)
    duplicate: bool  # its idempotency key was seen before: nothing new was written


async def accept(
    db: Database, wakeups: Wakeups, key: SessionKey, inputs: list[list[Piece]], now: datetime
) -> list[Accepted]:
    out: list[Accepted] = []
    rows: list[dict[str, object]] = []
    async with db.write() as session:
        row = await lock_or_create_session(session, key, now)
        seen: dict[str, list[int]] = {}  # idempotency keys of this request, so repeats within it dedupe too
        for pieces in inputs:
            idempotency_key = pieces[0].idempotency_key
            if idempotency_key is not None:
                known = seen.get(idempotency_key)
                if known is None:
                    known = [
                        c.seq for c in await chunks.by_idempotency_key(session, key, idempotency_key)
                    ] or None
                if known is not None:
                    seen[idempotency_key] = known
                    out.append(Accepted(known, duplicate=True))
                    continue
            seqs = []
            for piece in pieces:
                seqs.append(row.next_seq)
                rows.append(_chunk_row(key, row.next_seq, piece, now))
                row.next_seq += 1
            if idempotency_key is not None:
                seen[idempotency_key] = seqs
            out.append(Accepted(seqs, duplicate=False))
        if rows:
            await session.execute(Chunk.__table__.insert(), rows)
            row.updated_at = now
            # A session blocked by a failed chunk stays parked; one in backoff keeps its later ready time.
            if row.blocked_by_seq is None and row.ready_at is None:
                row.ready_at = now
            await announce(session, work=True)
    if rows:
        wakeups.work()
    return out


def _chunk_row(key: SessionKey, seq: int, piece: Piece, now: datetime) -> dict[str, object]:
    return {
        "tenant_id": key[0],
        "session_id": key[1],
        "seq": seq,
        "content": piece.content,
        "timestamp": piece.timestamp,
        "idempotency_key": piece.idempotency_key,
        "part": piece.part,
        "metadata": piece.metadata,
        "status": "pending",
        "attempts": 0,
        "accepted_at": now,
        "next_attempt_at": now,
    }
