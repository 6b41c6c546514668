"""The chunk queue (ARCHITECTURE §5): every change of a chunk's status and of a session's place in the
queue (`ready_at`, lease, `blocked_by_seq`) happens here, and nowhere else.

A session is *queued* when `ready_at` is set (a worker may claim it from then on), *leased* while
`lease_owner`/`lease_until` name a live worker, *parked* when `ready_at` is NULL (nothing to do, or
blocked by a failed chunk: `blocked_by_seq`). Only a session's *head* (its lowest chunk not `done`)
is ever processed, so chunks apply strictly in seq order, each exactly once.

Chunk transitions (`ChunkStatus`):

| transition     | from        | to          | session                                           | caller      |
|----------------|-------------|-------------|---------------------------------------------------|-------------|
| enqueue        | (new)       | pending     | queued now unless blocked or in backoff (without  | ingest      |
|                |             |             | idempotency keys: the lock, the seqs and this in  |             |
|                |             |             | one UPDATE before the INSERT, `_RESERVE`; on      |             |
|                |             |             | Postgres one statement with the INSERT, `_ACCEPT`,|             |
|                |             |             | see below)                                        |             |
| claim          | —           | —           | leases taken (ready, no live lease), up to n; in  | worker      |
|                |             |             | the same transaction each one's head is started   |             |
|                |             |             | (as `start`, under the lock the claim took). On   |             |
|                |             |             | Postgres first tried as a read and one statement  |             |
|                |             |             | (`peek_ready`, `claim_at_once`, see below)        |             |
| start          | pending     | processing  | lease extended; attempts + 1 (also in `claim`,    | worker      |
|                |             |             | and at the end of `complete` for the next head of |             |
|                |             |             | a burst)                                          |             |
| complete       | processing  | done        | lease extended (same transaction as the memory);  | worker      |
|                |             |             | as `park` when the next head is not runnable. On  |             |
|                |             |             | Postgres first tried as one statement without a   |             |
|                |             |             | transaction (`complete_at_once`, see below)       |             |
| fail_attempt   | processing  | pending     | queued at the backoff time (`backoff · 2^(n-1)`)  | worker      |
| fail_and_block | processing  | failed      | parked, `blocked_by_seq`, lease released          | worker      |
|   (lost)       | processing  | failed      | the same, at `start` when the last attempt died   | worker      |
| abandon        | processing  | pending     | queued now, lease released; the attempt uncounted | worker stop |
| requeue        | —           | —           | lease released, queued now (fairness)             | worker      |
| park           | —           | —           | head not runnable: parked / queued at its backoff | worker      |
| retry          | failed      | pending     | unblocked, queued now; attempts reset             | API         |
| import         | (new)       | as exported | queued if any chunk is not done; `processing`     | API         |
|                |             |             | comes in as pending (its effects are not in the   |             |
|                |             |             | exported memory)                                  |             |

A worker that lost its lease (expired and claimed by another) finds the chunk no longer `processing`
under its name at `complete`/`fail_attempt`/`abandon`, and drops its result: the new holder redoes it.

A head changes only under its session's row lock, taken before the head is read: by the lease
extension in `start`, by the claim's UPDATE in `claim` (the lease it relies on was written by that
statement, in the same transaction), by `held` in `complete`. On Postgres the head is read by a
later statement than the one that took the lock, so it sees every chunk enqueued before it. (The
one-statement commit and claim below read the head before the lock instead, and write only while the
session row is still at the version they read.)

`complete_at_once` (Postgres) reads first and locks after, and is still exactly-once and in order:
`peek` reads, without a lock or transaction, what `held` reads (lease, chunk, next head) and the session
row's version token (`xmin`, which every UPDATE of the row changes); the commit is then ONE statement,
atomic by itself, whose first CTE is the lease check: the session row's UPDATE, which matches only while
the owner holds the lease and the row is still the version `peek` read (when another transaction
updated it meanwhile, READ COMMITTED re-checks that condition on the newest version after the lock).
Every other write of the statement (chunk → done, items, removals, audit rows, the next head's start)
reads that CTE's row, so either all of them are written or none. Why a row at the same version is
enough: every transaction that changes a session's chunks also writes its session row (each transition
above does; `enqueue` writes `next_seq`), and so does every write of its memory (`version`); so nothing
`peek` read can have changed without the row changing. When the statement writes nothing (lease lost,
a manual edit, a heartbeat or an enqueue in between) the caller learns nothing was committed and runs
`held` + `complete` in a transaction, which tells a lost lease (drop the result) from an edit or a race.
Two round trips and no BEGIN/COMMIT instead of seven. SQLite has no data-modifying CTEs and is local
(no round trips to save): it always uses the transaction.

`claim_at_once` (Postgres) is the claim read first and locked after, on the same grounds: `peek_ready`
reads, without a lock, the sessions `claim` would lease, each with its row version's token and its head;
ONE statement then leases each of them only while its row is still at the version read (re-checked on
the newest version when it waited for the lock) and starts, in a CTE that reads the leased rows, the
head that was read. A row at the same version means no chunk of the session changed since the read (see
above), so the head read is still the head, and no other worker leased it (a lease writes the row); the
objection that kept claim and start two statements in one transaction (the head read from a snapshot
older than the lock could miss a chunk enqueued in between) does not apply, because such an enqueue
writes the row and the statement then leases nothing. The worker uses it only when every session read
has a runnable head and its memory kept at the version read (`Worker._claim_at_once`); otherwise, and
for the slots of sessions it did not lease, it runs the claim's transaction. Two round trips and no
BEGIN/COMMIT instead of four; a claim that finds nothing ready is one read instead of three round trips.

`enqueue` of a request without idempotency keys on Postgres is ONE statement without a transaction
(`_ACCEPT`, one round trip instead of four): `_RESERVE` (the session row's UPDATE, which takes its lock
and `adding` seqs) as a CTE, and the INSERT of the chunks, read from one JSON parameter, each seq the
first one taken plus the chunk's offset in the request. Order: the seqs come from the UPDATE under the
row lock, and a concurrent enqueue's UPDATE waits for that lock and is re-evaluated on the newest row
version (READ COMMITTED), so it takes the seqs after these. Atomic: a failing INSERT undoes the UPDATE
(an error answer leaves nothing behind), and an answer means both committed (never lost).
A session that does not exist, or was deleted while the statement waited, gives no row and the INSERT
writes nothing; the transaction then creates the session. Wake-ups: the INSERT's statement trigger
(migration 0007) notifies other processes at the statement's commit, as it does inside a transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Column,
    Table,
    Text,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.context import request_id
from app.errors import Backlogged
from app.ingest.prepare import Piece
from app.ingest.wakeups import Wakeups, announce
from app.memory import MemoryKind, MemoryState
from app.metrics import CHUNK_QUEUE_WAIT, PENDING_CHUNKS
from app.settings import Settings
from app.store import audit, chunks, memory, policies
from app.store.chunks import QUEUED_COLUMNS, QueuedChunk
from app.store.database import Database
from app.store.driver import fetch
from app.store.memory import ItemChanges, bound_target_params, bound_targets, changes_json
from app.store.models import Chunk, ChunkStatus, Session
from app.store.sessions import (
    LEASED_COLUMNS,
    SESSIONS,
    LeasedSession,
    SessionKey,
    lock_or_create_session,
    memory_values,
)
from app.store.sql import Executor, batched, json_rows, to_json
from app.store.types import UTCDateTime, utcnow

__all__ = ["Accepted", "ChunkQueue", "ChunkStatus", "Held", "QueueConfig", "Ready", "Seen", "Started"]

log = logging.getLogger(__name__)

# Chunk rows per INSERT when a request is accepted (see `enqueue`).
_INSERT_BATCH = 100
LOST_ATTEMPT = "the worker processing the last attempt was lost"


@dataclass(frozen=True)
class QueueConfig:
    lease_s: float
    max_attempts: int
    backoff_s: float
    max_backlog: int
    backlog_retry_s: int  # the Retry-After of a 429 for a full backlog

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueConfig:
        return cls(
            lease_s=settings.lease_seconds,
            max_attempts=settings.chunk_max_attempts,
            backoff_s=settings.retry_backoff_s,
            max_backlog=settings.ingest_max_backlog,
            # The backlog is recounted every poll interval; a few of them let workers drain some of it.
            backlog_retry_s=max(1, round(5 * settings.poll_interval_s)),
        )


@dataclass(frozen=True)
class Accepted:
    seqs: list[int]  # the seqs of one input chunk (several when it was split)
    duplicate: bool  # its idempotency key was seen before: nothing new was written
    blocked: bool  # the session was blocked by a failed chunk when they were accepted


# Statements on every chunk's path, built once (see `app/store/chunks.py`). The worker's statements
# are Core, on the tables: plain columns in, explicit UPDATEs out, no ORM entity to load and flush.
_INSERT_CHUNKS = cast(Table, Chunk.__table__).insert()
# The columns of a chunk as accepted (`_pending_row`).
_PENDING_COLUMNS = (
    "tenant_id",
    "session_id",
    "seq",
    "content",
    "timestamp",
    "idempotency_key",
    "request_id",
    "part",
    "metadata",
    "status",
    "attempts",
    "accepted_at",
    "next_attempt_at",
)
_SESSIONS, _CHUNKS = SESSIONS, chunks.CHUNKS
_FOLLOWING = _CHUNKS.alias("following")
_OF_SESSION = (_SESSIONS.c.tenant_id == bindparam("tenant"), _SESSIONS.c.id == bindparam("session"))
_OF_CHUNKS = (_CHUNKS.c.tenant_id == bindparam("tenant"), _CHUNKS.c.session_id == bindparam("session"))
_NEXT_SEQ = (  # of the head that follows chunk `seq`
    select(func.min(_CHUNKS.c.seq))
    .where(*_OF_CHUNKS, _CHUNKS.c.seq > bindparam("seq"), _CHUNKS.c.status.in_(chunks.HEAD_STATUSES))
    .correlate(None)  # its own scan of the chunks, not the joined chunk
    .scalar_subquery()
)
_HELD_COLUMNS = (
    *LEASED_COLUMNS,
    _SESSIONS.c.lease_owner,
    *QUEUED_COLUMNS,
    *(_FOLLOWING.c[column.name] for column in QUEUED_COLUMNS),
)
_HELD_FROM = _SESSIONS.join(
    _CHUNKS,
    and_(
        _CHUNKS.c.tenant_id == _SESSIONS.c.tenant_id,
        _CHUNKS.c.session_id == _SESSIONS.c.id,
        _CHUNKS.c.seq == bindparam("seq"),
    ),
).outerjoin(
    _FOLLOWING,
    and_(
        _FOLLOWING.c.tenant_id == _SESSIONS.c.tenant_id,
        _FOLLOWING.c.session_id == _SESSIONS.c.id,
        _FOLLOWING.c.seq == _NEXT_SEQ,
    ),
)
_HELD = (
    select(*_HELD_COLUMNS)
    .select_from(_HELD_FROM)
    .where(*_OF_SESSION)
    .with_for_update(of=_SESSIONS)  # the chunk changes only under its session's lock
)
# The session row version's writer (Postgres `xmin`): every UPDATE of the row changes it.
_XMIN = literal_column("sessions.xmin").cast(Text)
# `held` without the lock, with what `complete_at_once` needs besides and the reply's targets (see `peek`).
_TARGETS = bound_targets(bindparam("tenant"), bindparam("session")).subquery("targets")
_PEEK = (
    select(*_HELD_COLUMNS, _SESSIONS.c.ready_at, _SESSIONS.c.blocked_by_seq, _XMIN, *_TARGETS.c)
    .select_from(_HELD_FROM.outerjoin(_TARGETS, true()))
    .where(*_OF_SESSION)
    .order_by(_TARGETS.c.position)
)
_CLAIMABLE = (  # queued and no live lease
    _SESSIONS.c.ready_at <= bindparam("now"),
    or_(_SESSIONS.c.lease_until.is_(None), _SESSIONS.c.lease_until < bindparam("now")),
)
_READY = (
    select(_SESSIONS.c.tenant_id, _SESSIONS.c.id)
    .where(*_CLAIMABLE)
    .order_by(_SESSIONS.c.ready_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
_CLAIM = (
    update(_SESSIONS)
    .where(tuple_(_SESSIONS.c.tenant_id, _SESSIONS.c.id).in_(_READY))
    .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
    .returning(*LEASED_COLUMNS)
)
_HEAD_SEQ = (
    select(func.min(_CHUNKS.c.seq))
    .where(*_OF_CHUNKS, _CHUNKS.c.status.in_(chunks.HEAD_STATUSES))
    .correlate(None)  # its own scan of the chunks, not the updated row
    .scalar_subquery()
)
_HEAD = select(*QUEUED_COLUMNS).where(*_OF_CHUNKS, _CHUNKS.c.seq == _HEAD_SEQ)
# The head moved to `processing` in one statement when it is runnable now (not failed, not in backoff,
# attempts left), returned with the active policy; anything else goes through `start_leased`'s slower
# path, which decides what to do with it.
_NOW = bindparam("now", type_=UTCDateTime())
_RUNNABLE = (  # a head that may start now (see `_parked` for the others)
    _CHUNKS.c.status != ChunkStatus.FAILED,
    or_(_CHUNKS.c.next_attempt_at.is_(None), _CHUNKS.c.next_attempt_at <= _NOW),
    _CHUNKS.c.attempts < bindparam("max_attempts"),
)
_STARTED = {
    "status": ChunkStatus.PROCESSING,
    "attempts": _CHUNKS.c.attempts + 1,
    "started_at": func.coalesce(_CHUNKS.c.started_at, _NOW),
}
_START_HEAD = (
    update(_CHUNKS)
    .where(*_OF_CHUNKS, _CHUNKS.c.seq == _HEAD_SEQ, *_RUNNABLE)
    .values(_STARTED)
    .returning(*QUEUED_COLUMNS, *policies.SERVING_COLUMNS)
)
# `claim` on Postgres read first (`peek_ready`, no lock): the sessions `_READY` would pick, each with
# its row version's token and its head (NULL: none), as `_HEAD` reads it.
_HEAD_ROW = _CHUNKS.alias("head")
_PEEK_READY = (
    select(*LEASED_COLUMNS, _XMIN, *(_HEAD_ROW.c[column.name] for column in QUEUED_COLUMNS))
    .select_from(
        _SESSIONS.outerjoin(
            _HEAD_ROW,
            and_(
                _HEAD_ROW.c.tenant_id == _SESSIONS.c.tenant_id,
                _HEAD_ROW.c.session_id == _SESSIONS.c.id,
                _HEAD_ROW.c.seq
                == select(func.min(_CHUNKS.c.seq))
                .where(
                    _CHUNKS.c.tenant_id == _SESSIONS.c.tenant_id,
                    _CHUNKS.c.session_id == _SESSIONS.c.id,
                    _CHUNKS.c.status.in_(chunks.HEAD_STATUSES),
                )
                .correlate(_SESSIONS)
                .scalar_subquery(),
            ),
        )
    )
    .where(*_CLAIMABLE)
    .order_by(_SESSIONS.c.ready_at)
    .limit(bindparam("limit"))
)
# ... then ONE statement (`claim_at_once`): the leases, each only on a row still at the version read
# (the lease check, as in `_COMPLETE_AT_ONCE`), and the start of the heads read, of the leased rows only.
_SEEN_READY = json_rows(
    "seen", _SESSIONS.c.tenant_id, _SESSIONS.c.id, Column("seen_xmin", Text), _CHUNKS.c.seq
)
_LEASED = (
    update(_SESSIONS)
    .where(
        _SESSIONS.c.tenant_id == _SEEN_READY.c.tenant_id,
        _SESSIONS.c.id == _SEEN_READY.c.id,
        _XMIN == _SEEN_READY.c.seen_xmin,
    )
    .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
    .returning(*LEASED_COLUMNS, _SEEN_READY.c.seq.label("head_seq"))
    .cte("leased")
)
_HEADS_STARTED = (
    update(_CHUNKS)
    .where(
        _CHUNKS.c.tenant_id == _LEASED.c.tenant_id,
        _CHUNKS.c.session_id == _LEASED.c.id,
        _CHUNKS.c.seq == _LEASED.c.head_seq,
        *_RUNNABLE,
    )
    .values(_STARTED)
    .returning(
        _CHUNKS.c.tenant_id.label("of_tenant"),
        _CHUNKS.c.session_id.label("of_session"),
        *QUEUED_COLUMNS,
        *(column.label(f"serving_{n}") for n, column in enumerate(policies.SERVING_COLUMNS)),
    )
    .cte("heads_started")
)
_CLAIM_AT_ONCE = select(
    *(_LEASED.c[column.name] for column in LEASED_COLUMNS),
    *list(_HEADS_STARTED.c)[2:],
).select_from(
    _LEASED.outerjoin(
        _HEADS_STARTED,
        and_(_HEADS_STARTED.c.of_tenant == _LEASED.c.tenant_id, _HEADS_STARTED.c.of_session == _LEASED.c.id),
    )
)
_EXTEND_LEASE = (
    update(_SESSIONS)
    .where(*_OF_SESSION, _SESSIONS.c.lease_owner == bindparam("owner"))
    .values(lease_until=bindparam("until"))
    .returning(*LEASED_COLUMNS)
)
# Explicit UPDATEs of one session row / one chunk: the columns set are the keys of the parameters
# beside the row's key (`_set_session`, `_set_chunk`), one compiled form per set of columns.
_SET_SESSION = update(_SESSIONS).where(
    _SESSIONS.c.tenant_id == bindparam("key_tenant"), _SESSIONS.c.id == bindparam("key_session")
)
_SET_CHUNK = update(_CHUNKS).where(
    _CHUNKS.c.tenant_id == bindparam("key_tenant"),
    _CHUNKS.c.session_id == bindparam("key_session"),
    _CHUNKS.c.seq == bindparam("key_seq"),
)
_FREE = {"lease_owner": None, "lease_until": None}  # the lease released
# `complete`'s chunk → `done`. On Postgres it rides on the session row's UPDATE as a data-modifying
# CTE, one round trip for both (safe in one statement: the session is locked by `held` already and
# the chunk changes only under that lock, so neither write depends on what the statement's snapshot
# sees); SQLite has no such CTEs, and is local (no round trips to save): two statements there.
_DONE = (
    update(_CHUNKS)
    .where(
        _CHUNKS.c.tenant_id == bindparam("key_tenant"),
        _CHUNKS.c.session_id == bindparam("key_session"),
        _CHUNKS.c.seq == bindparam("done_seq"),
    )
    .values(
        status=ChunkStatus.DONE,
        done_at=bindparam("done_time"),
        error=None,
        next_attempt_at=None,
        policy=bindparam("done_policy"),
        model=bindparam("done_model"),
        usage=bindparam("done_usage"),
    )
)
_COMPLETE = _SET_SESSION.add_cte(_DONE.returning(_CHUNKS.c.seq).cte("done"))
# `complete_at_once` (Postgres): the whole commit as one statement. Its first CTE is the lease check,
# the session row's UPDATE, which matches only while `owner` holds the lease and the row is the
# version `peek` read (`_XMIN`; on a row updated meanwhile READ COMMITTED re-checks this on the newest
# version); every other write reads that CTE's row (`_APPLIED`), so a lost lease writes nothing.
_SESSION_VALUES = (
    "core",
    "core_truncated",
    "version",
    "next_item",
    "updated_at",
    "lease_owner",
    "lease_until",
    "ready_at",
    "blocked_by_seq",
)
_LEASE_CHECK = (
    update(_SESSIONS)
    .where(*_OF_SESSION, _SESSIONS.c.lease_owner == bindparam("owner"), _XMIN == bindparam("seen"))
    .values({name: bindparam(f"set_{name}") for name in _SESSION_VALUES})
    .returning(_SESSIONS.c.id)
    .cte("lease_check")
)
_APPLIED = select(_LEASE_CHECK.c.id).exists()
# In a burst, the next head (`peek` read its seq; NULL starts none), as `start_following` starts it.
# (No parameter of this statement may be named like a column of a table it writes: SQLAlchemy would
# add that column to the UPDATE's SET.)
_START_NEXT = (
    update(_CHUNKS)
    .where(*_OF_CHUNKS, _CHUNKS.c.seq == bindparam("start_seq"), *_RUNNABLE, _APPLIED)
    .values(_STARTED)
    .returning(
        *QUEUED_COLUMNS, *(column.label(f"serving_{n}") for n, column in enumerate(policies.SERVING_COLUMNS))
    )
    .cte("started_next")
)
_COMPLETE_AT_ONCE = (
    select(_LEASE_CHECK.c.id, *_START_NEXT.c)
    .select_from(_LEASE_CHECK.outerjoin(_START_NEXT, true()))
    .add_cte(
        _DONE.where(_APPLIED).returning(_CHUNKS.c.seq).cte("done"),
        *memory.changes_ctes(_APPLIED, bindparam("tenant"), bindparam("session")),
        audit.insert_cte(_APPLIED),
    )
)
_REQUEUE = (
    update(_SESSIONS)
    .where(*_OF_SESSION, _SESSIONS.c.lease_owner == bindparam("owner"))
    .values(lease_owner=None, lease_until=None, ready_at=bindparam("now"))
)
# `enqueue` without idempotency keys: the session row locked and `adding` seqs taken in one statement,
# with the session queued now as `enqueue` does it after the INSERT (unless blocked or in backoff). It
# returns the new `next_seq`; on Postgres a concurrent enqueue's update is re-read once the lock is ours.
_RESERVE = (
    update(_SESSIONS)
    .where(*_OF_SESSION)
    .values(
        next_seq=_SESSIONS.c.next_seq + bindparam("adding"),
        updated_at=_NOW,
        ready_at=case(
            (and_(_SESSIONS.c.blocked_by_seq.is_(None), _SESSIONS.c.ready_at.is_(None)), _NOW),
            else_=_SESSIONS.c.ready_at,
        ),
    )
    .returning(_SESSIONS.c.next_seq, _SESSIONS.c.blocked_by_seq)
)
# `enqueue` without idempotency keys on Postgres, as ONE statement (no BEGIN/COMMIT): `_RESERVE` and
# the INSERT of the request's chunks, read from one JSON parameter (`_pending_row`s whose `seq` is the
# offset in the request), each seq the first one `_RESERVE` took plus that offset. No row: no session.
_RESERVED = _RESERVE.cte("reserved")
_NEW_CHUNKS = json_rows("accept", *(_CHUNKS.c[name] for name in _PENDING_COLUMNS))
_ACCEPT = select(_RESERVED.c.next_seq, _RESERVED.c.blocked_by_seq).add_cte(
    _CHUNKS.insert()
    .from_select(
        _PENDING_COLUMNS,
        select(
            *(
                _RESERVED.c.next_seq - bindparam("adding") + _NEW_CHUNKS.c.seq
                if name == "seq"
                else _NEW_CHUNKS.c[name]
                for name in _PENDING_COLUMNS
            )
        ).select_from(_RESERVED.join(_NEW_CHUNKS, true())),
    )
    .returning(_CHUNKS.c.seq)
    .cte("accepted")
)
# A session's place in the queue, locked: what `enqueue` reads (plain columns, see `LeasedSession`).
_PLACE = (
    select(_SESSIONS.c.next_seq, _SESSIONS.c.blocked_by_seq, _SESSIONS.c.ready_at)
    .where(*_OF_SESSION)
    .with_for_update()
)


@dataclass(frozen=True)
class Started:
    """The head chunk a worker has just moved to `processing`, with its session row (in the caller's
    transaction) so the caller can load what the policy needs, and the active policy (None: none)."""

    session: LeasedSession
    chunk: QueuedChunk
    serving: policies.Serving | None


@dataclass(frozen=True)
class Held:
    """A chunk in `processing` under a lease still held, with its session row (locked) and the head
    that follows it (None: no open or failed chunk after it), in the caller's transaction."""

    session: LeasedSession
    chunk: QueuedChunk
    next_head: QueuedChunk | None


@dataclass(frozen=True)
class Ready:
    """A session `peek_ready` found claimable, without a lock: its row, the row version's token
    (`xmin`) that `claim_at_once` checks, and its head (None: no open or failed chunk)."""

    session: LeasedSession
    xmin: str
    head: QueuedChunk | None


@dataclass(frozen=True)
class Seen:
    """What `peek` read without a lock: `held`'s answer, the session row's place in the queue as it
    stands, the row version's token (`xmin`) that `complete_at_once` checks, and the item rows the
    caller asked for."""

    held: Held
    ready_at: datetime | None
    blocked_by_seq: int | None
    xmin: str
    items: Sequence[Sequence[Any]]


def _done_params(
    key: SessionKey, held: Held, now: datetime, policy: str, model: str, usage: dict[str, Any]
) -> dict[str, Any]:
    """The parameters of `_DONE` (a chunk's `processing` → `done`) for `held`'s chunk."""
    return {
        "key_tenant": key[0],
        "key_session": key[1],
        "done_seq": held.chunk.seq,
        "done_time": now,
        "done_policy": policy,
        "done_model": model,
        "done_usage": usage,
    }


class ChunkQueue:
    def __init__(self, db: Database, wakeups: Wakeups, config: QueueConfig) -> None:
        self.db, self.wakeups, self.config = db, wakeups, config
        # Open chunks over all sessions as last counted (`refresh_backlog`) plus those this process
        # accepted since: what ingest checks against the bound without a count per request.
        self.backlog = 0

    # --- accepting ---

    async def enqueue(self, key: SessionKey, inputs: list[list[Piece]], now: datetime) -> list[Accepted]:
        """Commit the pieces to the log before any policy call (an accepted chunk is never lost);
        seqs are assigned under the session row's lock. A repeated idempotency key writes nothing.
        Raises `Backlogged` (nothing written) when the backlog would pass its bound."""
        adding = sum(len(pieces) for pieces in inputs)
        if self.backlog + adding > self.config.max_backlog:
            raise Backlogged(
                "too many chunks are waiting for the workers; retry later",
                retry_after_s=self.config.backlog_retry_s,
                details={"backlog": self.backlog, "max_backlog": self.config.max_backlog},
            )
        # Without idempotency keys every piece gets a seq: the lock and the session's new place are
        # one statement (`_RESERVE`), and no UPDATE follows the INSERT; on Postgres the INSERT joins
        # that statement (`_ACCEPT`, see the table at the top). A new session takes the transaction.
        keyless = adding > 0 and all(pieces[0].idempotency_key is None for pieces in inputs)
        out = await self._accept(key, inputs, now) if keyless and not self.db.is_sqlite else None
        if out is not None:
            self._accepted(adding)
            return out
        out = []
        rows: list[dict[str, object]] = []
        async with self.db.write() as session:
            # On Postgres `_accept` found no session: created by `_lock_place`.
            reserved = await _reserve(session, key, adding, now) if keyless and self.db.is_sqlite else None
            if reserved is None:
                next_seq, blocked_by, ready_at = await _lock_place(session, key, now)
            else:
                next_seq, blocked_by = reserved
            blocked = blocked_by is not None
            seen: dict[str, list[int]] = {}  # keys of this request, so repeats within it dedupe too
            for pieces in inputs:
                idempotency_key = pieces[0].idempotency_key
                if idempotency_key is not None:
                    known = seen.get(idempotency_key)
                    if known is None:
                        found = await chunks.by_idempotency_key(session, key, idempotency_key)
                        known = [c.seq for c in found] or None
                    if known is not None:
                        seen[idempotency_key] = known
                        out.append(Accepted(known, duplicate=True, blocked=blocked))
                        continue
                seqs = []
                for piece in pieces:
                    seqs.append(next_seq)
                    rows.append(_pending_row(key, next_seq, piece, now))
                    next_seq += 1
                if idempotency_key is not None:
                    seen[idempotency_key] = seqs
                out.append(Accepted(seqs, duplicate=False, blocked=blocked))
            # In batches: binding a request's worth of rows (up to `max_chunks_per_request`) in one
            # statement held the event loop for ~40 ms; between batches other requests get their turn.
            for batch in batched(rows, _INSERT_BATCH):
                await session.execute(_INSERT_CHUNKS, batch)
            if rows and reserved is None:
                place: dict[str, Any] = {"next_seq": next_seq, "updated_at": now}
                # A session blocked by a failed chunk stays parked; one in backoff keeps its ready time.
                if blocked_by is None and ready_at is None:
                    place["ready_at"] = now
                await _set_session(session, key, place)
                # Other processes hear of the new chunks from the INSERT's trigger (migration 0007).
        if rows:
            self._accepted(len(rows))
        return out

    async def _accept(
        self, key: SessionKey, inputs: list[list[Piece]], now: datetime
    ) -> list[Accepted] | None:
        """`enqueue` of keyless `inputs` as one statement without a transaction (Postgres, `_ACCEPT`):
        atomic by itself, committed when it returns. None when the session does not exist (nothing
        was written)."""
        pieces = [piece for chunk in inputs for piece in chunk]
        rows = [_pending_row(key, offset, piece, now) for offset, piece in enumerate(pieces)]
        params = {
            "tenant": key[0],
            "session": key[1],
            "adding": len(rows),
            "now": now,
            "accept": to_json(rows),
        }
        async with self.db.autocommit_connection() as db:
            taken = await fetch(db, _ACCEPT, params)
        if not taken:
            return None
        next_seq, blocked_by = taken[0]
        first, out = next_seq - len(rows), []
        for chunk in inputs:
            out.append(
                Accepted(
                    list(range(first, first + len(chunk))), duplicate=False, blocked=blocked_by is not None
                )
            )
            first += len(chunk)
        return out

    def _accepted(self, added: int) -> None:
        """After new chunks committed: count them into the backlog and wake a claim loop of this
        process (other processes hear it from the INSERT's trigger, migration 0007)."""
        self.backlog += added
        self.wakeups.work()

    async def refresh_backlog(self) -> None:
        """Count the open chunks (the autoscaling gauge `memalpha_pending_chunks` and the ingest bound)."""
        async with self.db.read() as session:
            self.backlog = await chunks.open_count(session)
        PENDING_CHUNKS.set(self.backlog)

    async def import_chunks(
        self, session: AsyncSession, row: Session, rows: Sequence[dict[str, Any]], now: datetime
    ) -> None:
        """Insert an export's chunk log into an empty session (in the caller's transaction): they keep
        their seqs and statuses, except that `processing` comes back as `pending`."""
        if not rows:
            return
        imported = [_imported(chunk, now) for chunk in rows]
        await session.execute(_INSERT_CHUNKS, imported)
        row.next_seq = max(int(chunk["seq"]) for chunk in imported) + 1
        if any(chunk["status"] != ChunkStatus.DONE for chunk in imported):
            row.ready_at = now  # a worker finds the head: pending runs, failed blocks (the INSERT notified)

    # --- the worker's side ---

    async def claim(self, db: Executor, owner: str, limit: int) -> list[LeasedSession]:
        """Lease up to `limit` of the longest-waiting ready sessions that no live lease holds, all
        under `owner`, in the caller's transaction: their rows stay locked until it ends, so the
        caller starts their heads in it (`start_leased`) without extending the lease it just took.
        Fewer than `limit` means nothing else was ready."""
        now = utcnow()
        taken = await db.execute(
            _CLAIM, {"now": now, "limit": limit, "owner": owner, "until": self._lease_end(now)}
        )
        return [LeasedSession(*row) for row in taken]

    async def peek_ready(self, db: AsyncConnection, limit: int, now: datetime) -> list[Ready]:
        """The sessions `claim` would lease now, with their heads, read without a lock (Postgres, for
        `claim_at_once`). Nothing read here is relied on unless the row is still at this version
        when `claim_at_once` locks it."""
        rows = await fetch(db, _PEEK_READY, {"now": now, "limit": limit})
        lease = len(LEASED_COLUMNS)
        return [
            Ready(
                LeasedSession(*row[:lease]),
                row[lease],
                QueuedChunk(*row[lease + 1 :]) if row[lease + 1] is not None else None,
            )
            for row in rows
        ]

    def runnable(self, head: QueuedChunk | None, now: datetime) -> bool:
        """Whether `head` would start now (`_START_HEAD`), not go the slow way of `start_leased`."""
        return head is not None and _parked(head, now) is None and head.attempts < self.config.max_attempts

    async def claim_at_once(
        self, db: AsyncConnection, owner: str, ready: Sequence[Ready], now: datetime
    ) -> list[tuple[LeasedSession, Started | None]]:
        """`claim` and `start_leased` of the `ready` sessions that `peek_ready` read with a runnable
        head, as one statement (Postgres, `_CLAIM_AT_ONCE`): each session is leased only while its row
        is still at the version read, and its head read is started only if it was leased. Returns the
        sessions leased, each with its head started (None: not runnable after all; `start` decides).
        Fewer than `ready`: the others changed since the read (taken, or new work, an edit)."""
        seen = [
            {"tenant_id": r.session.tenant_id, "id": r.session.id, "seen_xmin": r.xmin, "seq": r.head.seq}
            for r in ready
            if r.head is not None
        ]
        params = {
            "seen": to_json(seen),
            "owner": owner,
            "until": self._lease_end(now),
            "now": now,
            "max_attempts": self.config.max_attempts,
        }
        lease = len(LEASED_COLUMNS)
        out = []
        for row in await fetch(db, _CLAIM_AT_ONCE, params):
            session = LeasedSession(*row[:lease])
            started = None
            if row[lease] is not None:  # the outer join found the head started
                started = Started(session, *self._started(row[lease:], now))
            out.append((session, started))
        return out

    async def requeue(self, key: SessionKey, owner: str) -> None:
        """Hand the lease back with the session at the back of the queue (it still has work)."""
        async with self.db.write_one() as session:
            await session.execute(
                _REQUEUE, {"tenant": key[0], "session": key[1], "owner": owner, "now": utcnow()}
            )

    async def heartbeat(self, key: SessionKey, owner: str) -> None:
        async with self.db.write_one() as session:
            await session.execute(
                update(Session)
                .where(Session.tenant_id == key[0], Session.id == key[1], Session.lease_owner == owner)
                .values(lease_until=self._lease_end(utcnow()))
            )

    async def start(self, db: Executor, key: SessionKey, owner: str) -> Started | None:
        """`start_leased` after the lease check: the session row is locked and `owner`'s lease
        extended in one statement (None when `owner` no longer holds it)."""
        now = utcnow()
        row = await self._extend_lease(db, key, owner, now)
        return None if row is None else await self.start_leased(db, row, now)

    async def start_leased(self, db: Executor, row: LeasedSession, now: datetime) -> Started | None:
        """Move the head of `row`'s session to `processing`, in the caller's transaction, which holds
        the lease and has locked the row (`claim`, `start`) and also loads the memory. None when there
        is nothing to run now: the session is then parked, or queued at its head's backoff time, and
        the lease released. A head whose last attempt was started by a worker that died is failed (and
        blocks) here, which releases the lease too."""
        key = (row.tenant_id, row.id)
        started = await self._start_head(db, key, now)
        if started is not None:  # the common case, one statement
            return Started(row, *started)
        head = (await db.execute(_HEAD, {"tenant": key[0], "session": key[1]})).first()
        queued = QueuedChunk(*head) if head is not None else None
        parked = _parked(queued, now)
        if parked is not None:
            await _set_session(db, key, parked)
            return None
        # Runnable by every other test, so out of attempts: the last one was started by a worker that died.
        assert queued is not None and queued.attempts >= self.config.max_attempts
        await _fail_and_block(db, key, queued.seq, queued.error or LOST_ATTEMPT, now)
        self.wakeups.finished(key, queued.seq, ChunkStatus.FAILED)
        return None

    async def held(self, db: Executor, key: SessionKey, seq: int, owner: str) -> Held | None:
        """The session (locked), the chunk and the head that follows it, if `owner` still holds the
        lease and the chunk is still `processing`; None when the lease was lost (the caller drops its
        result). One statement: the chunk changes only under its session's lock, and so does what
        follows it (`enqueue` locks the session too)."""
        found = (await db.execute(_HELD, {"tenant": key[0], "session": key[1], "seq": seq})).first()
        return None if found is None else _held(found, owner)

    async def peek(
        self,
        db: AsyncConnection,
        key: SessionKey,
        seq: int,
        owner: str,
        ids: Collection[str] = (),
        contents: Collection[tuple[MemoryKind, str]] = (),
    ) -> Seen | None:
        """`held` without a lock (Postgres, for `complete_at_once`), with the session's items that
        have one of `ids` or `contents` (`app.store.memory.targets`) joined to it: one round trip.
        None when the lease was lost. Nothing read here is relied on unless the session row is still
        at this version when `complete_at_once` locks it."""
        params = {"tenant": key[0], "session": key[1], "seq": seq} | bound_target_params(ids, contents)
        rows = await fetch(db, _PEEK, params)
        held = _held(rows[0], owner) if rows else None
        if held is None:
            return None
        peeked = len(_HELD_COLUMNS)
        ready_at, blocked_by_seq, xmin = rows[0][peeked : peeked + 3]
        found = [row[peeked + 3 :] for row in rows if row[peeked + 3] is not None]  # None: no item joined
        return Seen(held, ready_at, blocked_by_seq, xmin, found)

    async def complete(
        self,
        db: Executor,
        key: SessionKey,
        held: Held,
        now: datetime,
        *,
        memory: MemoryState,
        policy: str,
        model: str,
        usage: dict[str, Any],
    ) -> bool:
        """`processing` → `done`, in the transaction that writes the chunk's effects (from `held`),
        with the session row's new `memory` scalars and lease extension in one UPDATE (on Postgres one
        statement with the chunk's, `_COMPLETE`). True when the lease was released with it: the next
        head is not runnable now (none, failed or in backoff), and the session is parked or queued as
        `start` would do, one transaction early."""
        done = _done_params(key, held, now, policy, model, usage)
        parked = _parked(held.next_head, now)
        extended = {"updated_at": now, "lease_until": self._lease_end(now)}
        values = memory_values(memory) | extended | (parked or {})
        if self.db.is_sqlite:
            await db.execute(_DONE, done)
            await _set_session(db, key, values)
        else:
            await db.execute(_COMPLETE, done | values)
        return parked is not None

    async def complete_at_once(
        self,
        db: AsyncConnection,
        key: SessionKey,
        seen: Seen,
        owner: str,
        now: datetime,
        *,
        memory: MemoryState,
        items: ItemChanges,
        logged: list[dict[str, object]],
        policy: str,
        model: str,
        usage: dict[str, Any],
        start_next: bool,
    ) -> tuple[bool, Started | None] | None:
        """`complete` with the chunk's effects (`items`, the audit rows `logged`) and, with
        `start_next`, `start_following`, as one statement (Postgres, `_COMPLETE_AT_ONCE`) on what
        `peek` saw. Returns whether the lease was released and the next head it started; None when
        it wrote nothing: the lease was lost or the session row changed since `peek` (see the table
        at the top). A single statement is atomic: it needs no transaction around it."""
        held = seen.held
        parked = _parked(held.next_head, now)
        values = (
            memory_values(memory)
            | {"updated_at": now, "lease_owner": owner, "lease_until": self._lease_end(now)}
            | {"ready_at": seen.ready_at, "blocked_by_seq": seen.blocked_by_seq}  # as `peek` saw them
            | (parked or {})
        )
        following = held.next_head.seq if start_next and parked is None and held.next_head else None
        params = {
            "tenant": key[0],
            "session": key[1],
            "owner": owner,
            "seen": seen.xmin,
            "now": now,
            "max_attempts": self.config.max_attempts,
            "start_seq": following,
        } | _done_params(key, held, now, policy, model, usage)
        params |= {f"set_{name}": values[name] for name in _SESSION_VALUES}
        params |= changes_json(items) | audit.rows_json(logged)
        found = await fetch(db, _COMPLETE_AT_ONCE, params)
        if not found:
            return None
        applied = found[0]
        started = None
        if applied[1] is not None:  # the outer join found the next head started
            chunk, serving = self._started(applied[1:], now)
            started = Started(held.session.committed(memory), chunk, serving)
        return parked is not None, started

    async def start_following(self, db: Executor, row: LeasedSession, now: datetime) -> Started | None:
        """After `complete` kept the lease (the next head is runnable), start that head in the same
        transaction, as `start` would: the session is locked and the lease held and extended, so this
        saves the worker a start transaction per chunk of a burst. `row` is the session as committed.
        None when its attempts are spent (`start` then fails it)."""
        started = await self._start_head(db, (row.tenant_id, row.id), now)
        return None if started is None else Started(row, *started)

    def announce_done(self, key: SessionKey, seq: int) -> None:
        """After `complete` committed: wake this process's waiters."""
        self.wakeups.finished(key, seq, ChunkStatus.DONE)

    async def fail_attempt(
        self, key: SessionKey, seq: int, owner: str, error: str, *, retryable: bool = True
    ) -> ChunkStatus | None:
        """`processing` → `pending` at the backoff time, or → `failed` (blocking the session) after the
        last attempt or at once when the error is not retryable. None when the lease was lost."""
        async with self.db.write_connection() as db:
            now = utcnow()
            held = await self.held(db, key, seq, owner)
            if held is None:
                return None
            attempts = held.chunk.attempts
            if not retryable or attempts >= self.config.max_attempts:
                await _fail_and_block(db, key, seq, error, now)
                status = ChunkStatus.FAILED
            else:
                at = now + timedelta(seconds=self.config.backoff_s * 2 ** (attempts - 1))
                await _set_chunk(
                    db, key, seq, {"status": ChunkStatus.PENDING, "error": error, "next_attempt_at": at}
                )
                await _set_session(db, key, {"ready_at": at})
                status = ChunkStatus.PENDING
        if status is ChunkStatus.FAILED:
            self.wakeups.finished(key, seq, ChunkStatus.FAILED)
        return status

    async def abandon(self, key: SessionKey, seq: int, owner: str) -> None:
        """Shutting down mid-chunk: `processing` → `pending` now, the attempt (which never got an
        answer) uncounted, the lease handed back."""
        async with self.db.write_connection() as db:
            held = await self.held(db, key, seq, owner)
            if held is None:
                return
            back = {"status": ChunkStatus.PENDING, "attempts": held.chunk.attempts - 1}
            await _set_chunk(db, key, seq, back)
            await _set_session(db, key, _FREE | {"ready_at": utcnow()})
            await announce(db, work=True)

    # --- the API's side ---

    async def retry(self, session: AsyncSession, row: Session, chunk: Chunk, now: datetime) -> None:
        """`failed` → `pending` with fresh attempts; the session is unblocked and queued (in the
        caller's transaction; the caller checked the chunk is `failed`)."""
        chunk.status, chunk.attempts = ChunkStatus.PENDING, 0
        chunk.next_attempt_at, chunk.done_at = now, None
        if row.blocked_by_seq == chunk.seq:
            row.blocked_by_seq = None
        row.ready_at, row.updated_at = now, now
        await announce(session, work=True)

    # --- helpers ---

    def _lease_end(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.config.lease_s)

    async def _start_head(
        self, db: Executor, key: SessionKey, now: datetime
    ) -> tuple[QueuedChunk, policies.Serving | None] | None:
        """The session's head moved to `processing` if it is runnable now, and the active policy."""
        runnable = await db.execute(
            _START_HEAD,
            {"tenant": key[0], "session": key[1], "now": now, "max_attempts": self.config.max_attempts},
        )
        started = runnable.first()
        return None if started is None else self._started(started, now)

    def _started(self, row: Sequence[Any], now: datetime) -> tuple[QueuedChunk, policies.Serving | None]:
        """A head started now, from its row (`QUEUED_COLUMNS`, then `policies.SERVING_COLUMNS`)."""
        chunk = QueuedChunk(*row[: len(QUEUED_COLUMNS)])
        if chunk.attempts == 1:
            CHUNK_QUEUE_WAIT.observe((now - chunk.accepted_at).total_seconds())
        return chunk, policies.serving_of(*row[len(QUEUED_COLUMNS) :])

    async def _extend_lease(
        self, db: Executor, key: SessionKey, owner: str, now: datetime
    ) -> LeasedSession | None:
        """The session row, locked, with `owner`'s lease extended; None when `owner` does not hold it."""
        extended = await db.execute(
            _EXTEND_LEASE,
            {"tenant": key[0], "session": key[1], "owner": owner, "until": self._lease_end(now)},
        )
        row = extended.first()
        return LeasedSession(*row) if row is not None else None


def _held(found: Sequence[Any], owner: str) -> Held | None:
    """`Held` from a row of `_HELD_COLUMNS`; None when `owner` no longer holds the lease or the chunk
    is no longer `processing`."""
    lease, fields = len(LEASED_COLUMNS), len(QUEUED_COLUMNS)
    chunk = QueuedChunk(*found[lease + 1 : lease + 1 + fields])
    if found[lease] != owner or chunk.status != ChunkStatus.PROCESSING:
        return None
    following = found[lease + 1 + fields : lease + 1 + 2 * fields]
    return Held(
        LeasedSession(*found[:lease]),
        chunk,
        QueuedChunk(*following) if following[0] is not None else None,  # None: the outer join found none
    )


async def _reserve(
    session: AsyncSession, key: SessionKey, adding: int, now: datetime
) -> tuple[int, int | None] | None:
    """The first of `adding` seqs taken for new chunks and the session's blocking chunk (`_RESERVE`);
    None when the session does not exist yet (`_lock_place` creates it)."""
    params = {"tenant": key[0], "session": key[1], "adding": adding, "now": now}
    taken = (await session.execute(_RESERVE, params)).first()
    if taken is None:
        return None
    next_seq, blocked_by = taken
    return next_seq - adding, blocked_by


async def _lock_place(
    session: AsyncSession, key: SessionKey, now: datetime
) -> tuple[int, int | None, datetime | None]:
    """The session's next seq, blocking chunk and ready time, its row locked; the session (and its
    tenant) is created on its first chunk."""
    params = {"tenant": key[0], "session": key[1]}
    place = (await session.execute(_PLACE, params)).first()
    if place is None:
        await lock_or_create_session(session, key, now)
        place = (await session.execute(_PLACE, params)).one()
    next_seq, blocked_by, ready_at = place
    return next_seq, blocked_by, ready_at


async def _set_session(db: Executor, key: SessionKey, values: dict[str, Any]) -> None:
    """UPDATE the session row's columns named in `values`."""
    await db.execute(_SET_SESSION, {"key_tenant": key[0], "key_session": key[1]} | values)


async def _set_chunk(db: Executor, key: SessionKey, seq: int, values: dict[str, Any]) -> None:
    """UPDATE the chunk's columns named in `values`."""
    await db.execute(_SET_CHUNK, {"key_tenant": key[0], "key_session": key[1], "key_seq": seq} | values)


async def _fail_and_block(db: Executor, key: SessionKey, seq: int, error: str, now: datetime) -> None:
    """The chunk fails for good: the session is parked, blocked by it, and the lease released (the
    status change notifies other processes' waiters: migration 0007's trigger)."""
    failed = {"status": ChunkStatus.FAILED, "error": error, "done_at": now, "next_attempt_at": None}
    await _set_chunk(db, key, seq, failed)
    await _set_session(db, key, _FREE | {"blocked_by_seq": seq, "ready_at": None})


def _parked(head: QueuedChunk | None, now: datetime) -> dict[str, Any] | None:
    """When the session's head is not runnable now: the session row's values that release the lease
    and park the session (no head, or a failed one that blocks it) or queue it at the head's backoff
    time. None when the head is runnable."""
    if head is None:
        return _FREE | {"ready_at": None}
    if head.status == ChunkStatus.FAILED:
        return _FREE | {"ready_at": None, "blocked_by_seq": head.seq}
    if head.next_attempt_at and head.next_attempt_at > now:
        return _FREE | {"ready_at": head.next_attempt_at}
    return None


def _pending_row(key: SessionKey, seq: int, piece: Piece, now: datetime) -> dict[str, object]:
    return {
        "tenant_id": key[0],
        "session_id": key[1],
        "seq": seq,
        "content": piece.content,
        "timestamp": piece.timestamp,
        "idempotency_key": piece.idempotency_key,
        "request_id": request_id.get(),
        "part": piece.part,
        "metadata": piece.metadata,
        "status": ChunkStatus.PENDING,
        "attempts": 0,
        "accepted_at": now,
        "next_attempt_at": now,
    }


def _imported(chunk: dict[str, Any], now: datetime) -> dict[str, Any]:
    status = ChunkStatus(chunk["status"])
    if status is ChunkStatus.PROCESSING:
        status = ChunkStatus.PENDING
    final = status in (ChunkStatus.DONE, ChunkStatus.FAILED)
    return chunk | {
        "status": status,
        "attempts": chunk["attempts"] if final else 0,
        "done_at": chunk["done_at"] if final else None,
        "next_attempt_at": now if status is ChunkStatus.PENDING else None,
    }
