"""Ingest workers (ARCHITECTURE §5): claim a session with a lease, process its chunks strictly in seq
order, and give each chunk's effects exactly once.

Per chunk: (1) a short transaction marks it `processing` and loads the memory; (2) the policy is
called with no transaction open, while a heartbeat keeps the lease; (3) one transaction re-locks the
session, checks the lease is still ours and the memory version unchanged, applies the operations,
writes items and the audit log, marks the chunk `done` and bumps the version. A lost lease drops the
result (the new holder redoes the chunk); a changed version (a manual edit) re-runs the policy on
the fresh memory.

Failure rule: a policy failure puts the chunk back to `pending` with exponential backoff; after
`chunk_max_attempts` (or at once for a non-retryable error) it is `failed`, and the session is
*blocked*: later chunks stay `pending` (they must not overtake it) until the failed chunk is retried
(`POST …/chunks/{seq}/retry`); the session shows `blocked_by_seq`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import or_, select, update

from app.ingest.wakeups import Wakeups, announce
from app.memory import LIST_KINDS, Applier, MemoryKind, MemoryState, Operation, OpResult, Tool
from app.metrics import (
    APPLY_LATENCY,
    CHUNK_QUEUE_WAIT,
    OPERATIONS,
    PARSE_FAILURES,
    POLICY_LATENCY,
    POLICY_TOKENS,
)
from app.policy.backend import PolicyBackend, PolicyError, PolicyReply
from app.settings import Settings
from app.store import audit, chunks, policies
from app.store.database import Database
from app.store.memory import load_state, save_state
from app.store.models import Chunk, Session
from app.store.sessions import SessionKey, get_session
from app.store.types import utcnow

log = logging.getLogger(__name__)

# A session's lease is handed back after this many chunks, so one busy session cannot starve others.
CHUNKS_PER_CLAIM = 32
# Re-runs of one chunk because the memory changed under it, before that counts as a failed attempt.
MAX_RERUNS = 3


@dataclass(frozen=True)
class WorkerConfig:
    lease_s: float
    max_attempts: int
    backoff_s: float
    poll_s: float
    attempt_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        return cls(
            lease_s=settings.lease_seconds,
            max_attempts=settings.chunk_max_attempts,
            backoff_s=settings.retry_backoff_s,
            poll_s=settings.poll_interval_s,
            # The backend times out and retries by itself; this only guards against a hung backend
            # (one period per try, plus one for its backoff sleeps).
            attempt_timeout_s=settings.policy_timeout_s * (settings.policy_max_retries + 2),
        )


@dataclass
class _Step:
    """A chunk a worker has started: what the policy needs and what the commit checks."""

    seq: int
    content: str
    attempts: int
    state: MemoryState
    policy_name: str
    model: str | None  # passed to the backend; None = its configured model


class _Commit(Enum):
    DONE = "done"
    LEASE_LOST = "lease_lost"
    STALE = "stale"


class Worker:
    def __init__(
        self,
        *,
        db: Database,
        policy: PolicyBackend,
        applier: Applier,
        wakeups: Wakeups,
        config: WorkerConfig,
        owner: str,
    ) -> None:
        self.db, self.policy, self.applier, self.wakeups = db, policy, applier, wakeups
        self.config, self.owner = config, owner

    async def run(self, stop: asyncio.Event) -> None:
        with self.wakeups.worker() as woken:
            while not stop.is_set():
                woken.clear()  # before looking: a wake-up during the look is not lost
                try:
                    worked = await self.run_once()
                except Exception:  # the database may be away for a while; keep the worker alive
                    log.exception("worker %s: claiming or processing failed", self.owner)
                    worked = False
                if not worked:
                    waits = [asyncio.ensure_future(woken.wait()), asyncio.ensure_future(stop.wait())]
                    await asyncio.wait(waits, timeout=self.config.poll_s, return_when=asyncio.FIRST_COMPLETED)
                    for waiter in waits:
                        waiter.cancel()

    async def run_once(self) -> bool:
        """Claim one session and work through its chunks; False when there was nothing to claim."""
        key = await self._claim()
        if key is None:
            return False
        for _ in range(CHUNKS_PER_CLAIM):
            step = await self._start_next(key)
            if step is None:
                return True
            await self._process(key, step)
        await self._requeue(key)
        return True

    # --- claiming ---

    async def _claim(self) -> SessionKey | None:
        async with self.db.write() as db:
            now = utcnow()
            query = (
                select(Session)
                .where(Session.ready_at <= now, or_(Session.lease_until.is_(None), Session.lease_until < now))
                .order_by(Session.ready_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            row = (await db.execute(query)).scalar_one_or_none()
            if row is None:
                return None
            row.lease_owner, row.lease_until = self.owner, now + timedelta(seconds=self.config.lease_s)
            return (row.tenant_id, row.id)

    async def _requeue(self, key: SessionKey) -> None:
        """Hand the lease back with the session at the back of the queue (it still has work)."""
        async with self.db.write() as db:
            row = await get_session(db, key, for_update=True)
            if row is not None and row.lease_owner == self.owner:
                row.lease_owner, row.lease_until, row.ready_at = None, None, utcnow()

    async def _heartbeat(self, key: SessionKey) -> None:
        """Extend the lease while a chunk is in flight (policy calls may outlast one lease)."""
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            try:
                async with self.db.write() as db:
                    await db.execute(
                        update(Session)
                        .where(
                            Session.tenant_id == key[0],
                            Session.id == key[1],
                            Session.lease_owner == self.owner,
                        )
                        .values(lease_until=utcnow() + timedelta(seconds=self.config.lease_s))
                    )
            except Exception:  # the next beat may succeed; the commit re-checks the lease anyway
                log.exception("worker %s: lease heartbeat failed", self.owner)

    # --- one chunk ---

    async def _start_next(self, key: SessionKey) -> _Step | None:
        """Mark the session's head chunk `processing` and load what the policy needs; None (and the
        lease released) when there is nothing to do now."""
        while True:
            async with self.db.write() as db:
                now = utcnow()
                row = await get_session(db, key, for_update=True)
                if row is None or row.lease_owner != self.owner:
                    return None
                head = await chunks.head(db, key)
                if (
                    head is None
                    or head.status == "failed"
                    or (head.next_attempt_at and head.next_attempt_at > now)
                ):
                    if head is None:
                        row.ready_at = None
                    elif head.status == "failed":
                        row.ready_at, row.blocked_by_seq = None, head.seq
                    else:
                        row.ready_at = head.next_attempt_at
                    row.lease_owner, row.lease_until = None, None
                    return None
                if head.attempts >= self.config.max_attempts:
                    # Its last attempt started but never finished (the worker died): give up on it.
                    self._fail(
                        row, head, head.error or "the worker processing the last attempt was lost", now
                    )
                    await announce(db, finished=key, seq=head.seq, status="failed")
                    self.wakeups.finished(key, head.seq, "failed")
                    continue
                if head.attempts == 0:
                    CHUNK_QUEUE_WAIT.observe((now - head.accepted_at).total_seconds())
                head.status, head.attempts = "processing", head.attempts + 1
                head.started_at = head.started_at or now
                row.lease_until = now + timedelta(seconds=self.config.lease_s)
                active = await policies.active(db)
                seeded = active is None or active.manifest.get("source") == policies.SETTINGS_SOURCE
                return _Step(
                    seq=head.seq,
                    content=head.content,
                    attempts=head.attempts,
                    state=await load_state(db, row),
                    policy_name=active.name if active else self.policy.name,
                    model=None if seeded else active.name,
                )

    async def _process(self, key: SessionKey, step: _Step) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(key))
        try:
            for _ in range(MAX_RERUNS + 1):
                try:
                    reply = await asyncio.wait_for(
                        self.policy.propose(step.state.copy(), step.content, model=step.model),
                        timeout=self.config.attempt_timeout_s,
                    )
                except PolicyError as exc:
                    await self._attempt_failed(key, step, str(exc), retryable=exc.retryable)
                    return
                except TimeoutError:
                    await self._attempt_failed(
                        key, step, f"policy timed out after {self.config.attempt_timeout_s:.0f} s"
                    )
                    return
                except Exception as exc:  # a bug in a backend fails the attempt, not the worker
                    log.exception("policy %s raised on chunk %s of %s", self.policy.name, step.seq, key)
                    await self._attempt_failed(key, step, f"policy error: {exc!r}")
                    return
                _observe_reply(reply)
                outcome = await self._commit(key, step, reply)
                if outcome is not _Commit.STALE:
                    return
            await self._attempt_failed(key, step, f"memory changed during processing {MAX_RERUNS + 1} times")
        except asyncio.CancelledError:
            # Shutting down: hand the chunk back now instead of leaving it to the lease expiry.
            await asyncio.shield(self._abandon(key, step))
            raise
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _commit(self, key: SessionKey, step: _Step, reply: PolicyReply) -> _Commit:
        started = time.perf_counter()
        ops = [Operation.from_call(call.name, call.arguments) for call in reply.calls]
        async with self.db.write() as db:
            now = utcnow()
            row = await get_session(db, key, for_update=True)
            chunk = await chunks.get(db, key, step.seq)
            if row is None or chunk is None or row.lease_owner != self.owner or chunk.status != "processing":
                log.warning(
                    "worker %s lost %s before committing chunk %s; dropping its result",
                    self.owner,
                    key,
                    step.seq,
                )
                return _Commit.LEASE_LOST
            if row.version != step.state.version:
                step.state = await load_state(db, row)  # a manual edit landed: propose again on it
                return _Commit.STALE
            after = step.state.copy()
            results = self.applier.apply_all(after, ops, now=now, source_seq=step.seq)
            if chunk.timestamp is not None:
                _stamp_events(after, results, chunk)
            await save_state(db, row, step.state, after)
            await audit.record(
                db,
                key,
                results,
                actor="policy",
                now=now,
                chunk_seq=step.seq,
                policy=step.policy_name,
                model=reply.model,
            )
            chunk.status, chunk.done_at, chunk.error, chunk.next_attempt_at = "done", now, None, None
            chunk.policy, chunk.model, chunk.usage = step.policy_name, reply.model, _usage(reply)
            row.updated_at = now
            row.lease_until = now + timedelta(seconds=self.config.lease_s)
            await announce(db, finished=key, seq=step.seq, status="done")
        APPLY_LATENCY.observe(time.perf_counter() - started)
        for result in results:
            OPERATIONS.labels(*op_labels(result)).inc()
        self.wakeups.finished(key, step.seq, "done")
        return _Commit.DONE

    async def _attempt_failed(
        self, key: SessionKey, step: _Step, error: str, *, retryable: bool = True
    ) -> None:
        async with self.db.write() as db:
            now = utcnow()
            row = await get_session(db, key, for_update=True)
            chunk = await chunks.get(db, key, step.seq)
            if row is None or chunk is None or row.lease_owner != self.owner or chunk.status != "processing":
                return
            failed = not retryable or chunk.attempts >= self.config.max_attempts
            if failed:
                self._fail(row, chunk, error, now)
                await announce(db, finished=key, seq=step.seq, status="failed")
            else:
                delay = self.config.backoff_s * 2 ** (chunk.attempts - 1)
                chunk.status, chunk.error = "pending", error
                chunk.next_attempt_at = now + timedelta(seconds=delay)
                row.ready_at = chunk.next_attempt_at
        log.warning("chunk %s of %s: attempt %s failed: %s", step.seq, key, step.attempts, error)
        if failed:
            self.wakeups.finished(key, step.seq, "failed")

    async def _abandon(self, key: SessionKey, step: _Step) -> None:
        async with self.db.write() as db:
            row = await get_session(db, key, for_update=True)
            chunk = await chunks.get(db, key, step.seq)
            if row is None or chunk is None or row.lease_owner != self.owner or chunk.status != "processing":
                return
            chunk.status, chunk.attempts = "pending", chunk.attempts - 1  # the attempt never got an answer
            row.lease_owner, row.lease_until, row.ready_at = None, None, utcnow()
            await announce(db, work=True)

    @staticmethod
    def _fail(row: Session, chunk: Chunk, error: str, now: datetime) -> None:
        chunk.status, chunk.error, chunk.done_at, chunk.next_attempt_at = "failed", error, now, None
        row.blocked_by_seq, row.ready_at = chunk.seq, None
        row.lease_owner, row.lease_until = None, None


def _stamp_events(state: MemoryState, results: list[OpResult], chunk: Chunk) -> None:
    """Episodic items written from a timestamped chunk happened (at the latest) at that time."""
    for result in results:
        if result.status == "ok" and result.tool == Tool.INSERT and result.memory_type == MemoryKind.EPISODIC:
            item = state.find(MemoryKind.EPISODIC, result.item_id or "")
            if item is not None:
                item.occurred_at = chunk.timestamp


def _usage(reply: PolicyReply) -> dict[str, object]:
    return {
        "prompt_tokens": reply.usage.prompt_tokens,
        "completion_tokens": reply.usage.completion_tokens,
        "latency_s": round(reply.latency_s, 4),
        "calls": len(reply.calls),
        "parse_errors": reply.parse_errors,
        "visible_items": reply.visible_items,
        "raw_text": reply.raw_text,
    }


def _observe_reply(reply: PolicyReply) -> None:
    POLICY_LATENCY.observe(reply.latency_s)
    POLICY_TOKENS.labels("prompt").inc(reply.usage.prompt_tokens)
    POLICY_TOKENS.labels("completion").inc(reply.usage.completion_tokens)
    if reply.parse_errors:
        PARSE_FAILURES.inc()


_TOOLS = {tool.value for tool in Tool}
_KINDS = {kind.value for kind in (MemoryKind.CORE, *LIST_KINDS)}


def op_labels(result: OpResult) -> tuple[str, str, str]:
    # Label values must stay a small set: a model can emit any string as a tool or memory type.
    tool = result.tool if result.tool in _TOOLS else "invalid"
    kind = result.memory_type if result.memory_type in _KINDS else "invalid"
    return tool, kind, result.status
