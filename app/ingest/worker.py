"""Ingest workers (ARCHITECTURE §5): the loop that claims a session, runs the policy on its head
chunk and commits the result. Every status change is the queue's (`app/ingest/queue.py`).

Per chunk: (1) a short transaction starts the head chunk and reads the memory the policy reads (for
the `openai` backend only the recent items it shows, `load_view`; nothing at all when this process
holds that session's memory at the current version, `app/ingest/views.py`): for the first chunk of a
claim the claim itself (`Worker.claim`: on Postgres, when this process holds the memory, one read and
one statement without a transaction; otherwise its transaction), for a later one either a start transaction or,
when the session has more chunks queued, the commit of the previous chunk; (2) the policy is
called with no transaction open, while a heartbeat keeps the lease; (3) the commit checks the lease
is still ours and the memory version unchanged, reads the older items the reply's operations name
(`targets`), applies the reply (the engine step, `Applier.apply_calls`), writes the items it touched
and the audit log and completes the chunk: on Postgres as one read and one write statement without a
transaction (`_commit_at_once`; the write checks the session row is still as read), otherwise, or when
that write finds the row changed, in one transaction that locks the session first. No step reads or
copies every item of a partial memory, so the cost per chunk does not grow with the memory. A lost
lease drops the result (the new holder redoes the chunk); a changed version (a manual edit) applies
the reply on the edited memory when its operations touch nothing the edit changed, and otherwise
re-runs the policy on it (`app/ingest/edits.py`). A failed policy call is a failed attempt (backoff, then blocking), and
so is a reply with parse errors and no usable tool call (counted in `memalpha_parse_failures_total`
too); a reply with some valid calls applies those and records the errors in the chunk's usage.

The worker's transactions run on plain connections (`Database.write_connection`): their statements
are Core, so an ORM session would only add its bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from app.context import request_id
from app.ingest.edits import conflicts
from app.ingest.queue import ChunkQueue, Started
from app.ingest.shutdown import Shutdown, run_to_completion, unless
from app.ingest.views import Views
from app.memory import LIST_KINDS, Applier, MemoryKind, MemoryState, Operation, OpResult, Tool
from app.metrics import (
    APPLY_LATENCY,
    OPERATIONS,
    PARSE_FAILURES,
    POLICY_LATENCY,
    POLICY_TOKENS,
)
from app.policy.backend import PolicyBackend, PolicyError, PolicyReply
from app.settings import Settings
from app.store import audit
from app.store.memory import (
    item_changes,
    load_state,
    load_view,
    save_items,
    targets,
    with_found,
    with_targets,
)
from app.store.sessions import LeasedSession, SessionKey
from app.store.sql import Executor
from app.store.types import utcnow

log = logging.getLogger(__name__)

# A session's lease is handed back after this many chunks, so one busy session cannot starve others.
CHUNKS_PER_CLAIM = 32
# Re-runs of one chunk because the memory changed under it, before that counts as a failed attempt.
MAX_RERUNS = 3


@dataclass(frozen=True)
class WorkerConfig:
    poll_s: float
    attempt_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        return cls(
            poll_s=settings.poll_interval_s,
            # The backend times out and retries by itself; this only guards against a hung backend
            # (one period per try, plus one for its backoff sleeps).
            attempt_timeout_s=settings.policy_timeout_s * (settings.policy_max_retries + 2),
        )


@dataclass
class Step:
    """A chunk a worker has started: what the policy needs and what the commit checks."""

    seq: int
    content: str
    timestamp: datetime | None
    attempts: int
    state: MemoryState
    policy_name: str
    model: str | None  # passed to the backend; None = its configured model
    request_id: str | None  # of the ingest request: bound for this chunk's log lines


@dataclass(frozen=True)
class Claimed:
    """What one claim took (`Worker.claim`): how many sessions it leased, and the head it started of
    each that had one runnable (the others were parked or queued at their backoff time, and handed
    back; None: leased, its head left to `run_session` to start)."""

    leased: int
    started: list[tuple[SessionKey, Step | None]]  # None: leased, its head for `run_session` to start
    lost: bool = False  # some sessions read as ready were taken or changed before the lease


class _Commit(Enum):
    DONE = "done"
    RELEASED = "released"  # done, and the lease handed back with it: nothing runnable is left now
    LEASE_LOST = "lease_lost"
    STALE = "stale"


@dataclass(frozen=True)
class _Applied:
    """A committed reply: the session row as committed, the memory after it, each operation's result,
    whether the lease was released with it, and the next head it started."""

    row: LeasedSession
    after: MemoryState
    results: list[OpResult]
    released: bool
    following: Started | None


# The ids and contents a reply's operations name beyond the loaded items (`targets`).
_Targets = tuple[set[str], set[tuple[MemoryKind, str]]]

# What follows a chunk: False, the lease is no longer held (released with the commit, or lost); True,
# start the next head; a `Step`, the next head, which the commit has started already.
_Next = bool | Step


class Worker:
    def __init__(
        self,
        *,
        queue: ChunkQueue,
        policy: PolicyBackend,
        applier: Applier,
        config: WorkerConfig,
        owner: str,
        views: Views,
        shutdown: Shutdown | None = None,
    ) -> None:
        self.queue, self.policy, self.applier = queue, policy, applier
        self.config, self.owner = config, owner
        self.shutdown = shutdown or Shutdown()
        self.views = views  # the process's memories by session and version, shared by its workers

    async def claim(self, limit: int) -> Claimed:
        """Lease up to `limit` ready sessions under this worker's owner and start their heads, with
        the memory each policy call reads: on Postgres first without a transaction (`_claim_at_once`),
        otherwise, or for what that leaves, in one transaction (`_claim_locked`)."""
        claimed = None if self.queue.db.is_sqlite else await self._claim_at_once(limit)
        if claimed is None:
            return await self._claim_locked(limit)
        if claimed.leased == limit or not claimed.lost:
            return claimed
        # Some sessions read as ready changed before their lease: others may be ready behind them.
        rest = await self._claim_locked(limit - claimed.leased)
        return Claimed(claimed.leased + rest.leased, claimed.started + rest.started)

    async def _claim_at_once(self, limit: int) -> Claimed | None:
        """Postgres: the ready sessions and their heads read without a lock (`ChunkQueue.peek_ready`),
        then leased and started by one statement that checks each row is as read
        (`ChunkQueue.claim_at_once`). None when one of them needs the transaction: its head is not
        runnable (park, backoff, a lost last attempt) or its memory is not kept here at its version
        (loaded under the claim's lock, so no edit can interleave)."""
        async with self.queue.db.autocommit_connection() as db:
            now = utcnow()
            ready = await self.queue.peek_ready(db, limit, now)
            if not ready:
                return Claimed(0, [])
            states = {(r.session.tenant_id, r.session.id): self.views.get(r.session) for r in ready}
            if any(state is None for state in states.values()) or not all(
                self.queue.runnable(r.head, now) for r in ready
            ):
                return None
            taken = await self.queue.claim_at_once(db, self.owner, ready, now)
        started: list[tuple[SessionKey, Step | None]] = []
        for row, head in taken:
            key = (row.tenant_id, row.id)
            # Leased at the row version read, so at the memory version read; a head not started after
            # all is left to `run_session`'s start, which decides what to do with it.
            state = states[key]
            started.append((key, None if head is None or state is None else self._step(head, state)))
        return Claimed(len(taken), started, lost=len(taken) < len(ready))

    async def _claim_locked(self, limit: int) -> Claimed:
        """`claim` in one transaction: the claim's row lock and fresh lease are what a start
        transaction would take, so none is needed for a claim's first chunk."""
        started: list[tuple[SessionKey, Step | None]] = []
        async with self.queue.db.write_connection() as db:
            rows = await self.queue.claim(db, self.owner, limit)
            for row in rows:
                head = await self.queue.start_leased(db, row, utcnow())
                if head is not None:
                    state = await self._current(db, row)
                    started.append(((row.tenant_id, row.id), self._step(head, state)))
        return Claimed(len(rows), started)

    async def run_session(self, key: SessionKey, first: Step | None) -> bool:
        """Work through the chunks of a session this worker's owner has claimed (`first`: its head,
        started by the claim), then hand it back. True when it was handed back with work left
        (another claim should look for it)."""
        step = first
        for n in range(CHUNKS_PER_CLAIM):
            if self.shutdown.stop.is_set():
                if step is not None:  # started by the last commit: back to pending, attempt uncounted
                    await self.queue.abandon(key, step.seq, self.owner)
                break
            step = step or await self._start_next(key)
            if step is None:
                return False
            # The last chunk of a claim starts nothing: the session then goes to the back of the queue.
            following = await self._process(key, step, chain=n + 1 < CHUNKS_PER_CLAIM)
            if following is False:
                return False
            step = following if isinstance(following, Step) else None
        await self.queue.requeue(key, self.owner)
        return True

    async def _heartbeat(self, key: SessionKey) -> None:
        """Extend the lease while a chunk is in flight (policy calls may outlast one lease)."""
        while True:
            await asyncio.sleep(self.queue.config.lease_s / 3)
            try:
                # Cancelled when the chunk ends: never inside the write (`app/ingest/shutdown.py`).
                await run_to_completion(self.queue.heartbeat(key, self.owner))
            except Exception as exc:  # the next beat may succeed; the commit re-checks the lease anyway
                if not self.queue.db.outage.failed(exc):
                    log.exception("worker %s: lease heartbeat failed", self.owner)

    # --- one chunk ---

    async def _start_next(self, key: SessionKey) -> Step | None:
        async with self.queue.db.write_connection() as db:
            started = await self.queue.start(db, key, self.owner)
            if started is None:
                return None
            return self._step(started, await self._current(db, started.session))

    def _step(self, started: Started, state: MemoryState) -> Step:
        active = started.serving
        # The row seeded from settings means "the backend's configured model"; any other row's
        # name is the served model (a LoRA adapter).
        served = None if active is None or active.from_settings else active.name
        return Step(
            seq=started.chunk.seq,
            content=started.chunk.content,
            timestamp=started.chunk.timestamp,
            attempts=started.chunk.attempts,
            state=state,
            policy_name=active.name if active else self.policy.name,
            model=served,
            request_id=started.chunk.request_id,
        )

    async def _current(self, db: Executor, row: LeasedSession) -> MemoryState:
        """The memory the policy reads, at the session's current version."""
        state = self.views.get(row)
        if state is None:
            recent = self.policy.view_items
            state = await load_state(db, row) if recent is None else await load_view(db, row, recent)
            self.views.put(row, state)
        return state

    async def _process(self, key: SessionKey, step: Step, *, chain: bool) -> _Next:
        """Run the policy on the chunk and commit it; with `chain`, the commit may start the next
        head too (see `_Next`)."""
        bound = request_id.set(step.request_id)
        heartbeat = asyncio.create_task(self._heartbeat(key))
        try:
            for _ in range(MAX_RERUNS + 1):
                try:
                    call = await unless(
                        self.shutdown.abandon,
                        asyncio.wait_for(
                            self.policy.propose(step.state.copy(), step.content, model=step.model),
                            timeout=self.config.attempt_timeout_s,
                        ),
                    )
                    if call is None:  # shutting down: the chunk goes back to pending, attempt uncounted
                        await self.queue.abandon(key, step.seq, self.owner)
                        return False
                    reply = call.result()
                except PolicyError as exc:
                    await self._attempt_failed(key, step, str(exc), retryable=exc.retryable)
                    return True
                except TimeoutError:
                    await self._attempt_failed(
                        key, step, f"policy timed out after {self.config.attempt_timeout_s:.0f} s"
                    )
                    return True
                except Exception as exc:  # a bug in a backend fails the attempt, not the worker
                    log.exception("policy %s raised on chunk %s of %s", self.policy.name, step.seq, key)
                    await self._attempt_failed(key, step, f"policy error: {exc!r}")
                    return True
                _observe_reply(reply)
                if not reply.calls and reply.parse_errors:
                    # Nothing usable came back (empty, prose, broken calls): committing it would mark
                    # the chunk done with its content never considered. A reply that parses into no
                    # calls without errors (the extractive policy finding nothing) is still done.
                    await self._attempt_failed(
                        key,
                        step,
                        f"no parseable tool call in the reply: {'; '.join(reply.parse_errors)[:500]}",
                    )
                    return True
                outcome = await self._commit(key, step, reply, chain=chain)
                if isinstance(outcome, Step):
                    return outcome
                if outcome is not _Commit.STALE:
                    return outcome is _Commit.DONE
            await self._attempt_failed(key, step, f"memory changed during processing {MAX_RERUNS + 1} times")
            return True
        except asyncio.CancelledError:
            # Cancelled (the last resort of a stopping pool): hand the chunk back now instead of
            # leaving it to the lease expiry.
            await run_to_completion(self.queue.abandon(key, step.seq, self.owner))
            raise
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            request_id.reset(bound)

    async def _commit(
        self, key: SessionKey, step: Step, reply: PolicyReply, *, chain: bool
    ) -> _Commit | Step:
        """Commit the reply; with `chain`, a runnable next head is started by the same commit and
        returned as the next step. On Postgres as one read and one write without a transaction
        (`_commit_at_once`); on SQLite, and on Postgres when that write finds the session changed, in
        one transaction under the session's lock (`_commit_locked`)."""
        started = time.perf_counter()
        # The older items the reply names: read before the apply, which needs them (so they cannot
        # be read by the statement that writes its result).
        wanted = targets([Operation.from_call(call.name, call.arguments) for call in reply.calls])
        chain = chain and not self.shutdown.stop.is_set()
        applied = None
        if not self.queue.db.is_sqlite:
            applied = await self._commit_at_once(key, step, reply, wanted, chain=chain)
        if applied is None:
            applied = await self._commit_locked(key, step, reply, wanted, chain=chain)
        if not isinstance(applied, _Applied):
            return applied
        row, after, results = applied.row, applied.after, applied.results
        self._keep(row, after, results)  # only once committed: a failed commit leaves nothing to reuse
        APPLY_LATENCY.observe(time.perf_counter() - started)
        for result in results:
            OPERATIONS.labels(*op_labels(result)).inc()
        self.queue.announce_done(key, step.seq)
        if applied.following is not None:
            state = self.views.get(row)
            if state is None:  # not kept (after a delete, see `_keep`): read at the committed version
                async with self.queue.db.read_connection() as db:
                    state = await self._current(db, row)
            return self._step(applied.following, state)
        return _Commit.RELEASED if applied.released else _Commit.DONE

    async def _commit_at_once(
        self, key: SessionKey, step: Step, reply: PolicyReply, wanted: _Targets, *, chain: bool
    ) -> _Applied | _Commit | None:
        """Postgres: the lease, the chunk, what follows it and the reply's targets read in one
        statement without a lock (`ChunkQueue.peek`), the reply applied, and everything written by one
        statement that checks the session row is as read (`ChunkQueue.complete_at_once`). None when
        the locked commit has to decide: the memory was edited, or the write found the row changed
        (it then wrote nothing)."""
        async with self.queue.db.autocommit_connection() as db:
            now = utcnow()
            # A whole memory has every item loaded: nothing to look for.
            seen = await self.queue.peek(
                db, key, step.seq, self.owner, *(wanted if step.state.partial else ())
            )
            if seen is None:
                return self._lost(key, step)
            if seen.held.session.version != step.state.version:
                return None
            base = with_found(step.state, seen.items)
            after, results = self._apply(step, reply, base, now)
            done = await self.queue.complete_at_once(
                db,
                key,
                seen,
                self.owner,
                now,
                memory=after,
                items=item_changes(key, base, after),
                logged=_logged(key, step, reply, results, now),
                policy=step.policy_name,
                model=reply.model,
                usage=_usage(reply),
                start_next=chain,
            )
        if done is None:
            return None
        released, following = done
        return _Applied(seen.held.session.committed(after), after, results, released, following)

    async def _commit_locked(
        self, key: SessionKey, step: Step, reply: PolicyReply, wanted: _Targets, *, chain: bool
    ) -> _Applied | _Commit:
        """The commit in one transaction that locks the session first (`ChunkQueue.held`)."""
        following: Started | None = None  # the next head, started in this commit
        async with self.queue.db.write_connection() as db:
            now = utcnow()
            held = await self.queue.held(db, key, step.seq, self.owner)
            if held is None:
                return self._lost(key, step)
            row = held.session
            edited = row.version != step.state.version  # a manual edit landed while the policy ran
            base = await self._current(db, row) if edited else step.state
            # A partial memory gets the older items the reply names: the applier then finds them (and
            # an edit of them shows in `conflicts`) as in the whole memory.
            base = await with_targets(db, row, base, *wanted)
            if edited and conflicts(step.state, base, reply.calls):
                step.state = base  # the reply would overwrite the edit: propose again on it
                return _Commit.STALE
            after, results = self._apply(step, reply, base, now)
            await save_items(db, key, base, after)
            await audit.insert(db, _logged(key, step, reply, results, now))
            released = await self.queue.complete(
                db,
                key,
                held,
                now,
                memory=after,
                policy=step.policy_name,
                model=reply.model,
                usage=_usage(reply),
            )
            row = row.committed(after)
            if not released and chain:
                following = await self.queue.start_following(db, row, now)
        return _Applied(row, after, results, released, following)

    def _apply(
        self, step: Step, reply: PolicyReply, base: MemoryState, now: datetime
    ) -> tuple[MemoryState, list[OpResult]]:
        """The reply applied to a copy of `base`: the memory after it, and each operation's result."""
        after = base.copy()
        results = self.applier.apply_calls(
            after, reply.calls, now=now, seq=step.seq, occurred_at=step.timestamp
        )
        return after, results

    def _lost(self, key: SessionKey, step: Step) -> _Commit:
        log.warning(
            "worker %s lost %s before committing chunk %s; dropping its result", self.owner, key, step.seq
        )
        return _Commit.LEASE_LOST

    def _keep(self, row: LeasedSession, after: MemoryState, results: list[OpResult]) -> None:
        """Cache the committed memory for the session's next chunk. A partial memory is cut back to
        the recent items (so it does not grow chunk after chunk); after a delete its recent items may
        no longer be the newest ones in the database, so the next chunk reads them again."""
        recent = self.policy.view_items
        if recent is None or not after.partial:
            self.views.put(row, after)
        elif any(result.changed and result.tool == Tool.DELETE for result in results):
            self.views.drop((row.tenant_id, row.id))
        else:
            self.views.put(row, after.trimmed(recent))

    async def _attempt_failed(
        self, key: SessionKey, step: Step, error: str, *, retryable: bool = True
    ) -> None:
        status = await self.queue.fail_attempt(key, step.seq, self.owner, error, retryable=retryable)
        if status is not None:
            log.warning("chunk %s of %s: attempt %s failed: %s", step.seq, key, step.attempts, error)


def _logged(
    key: SessionKey, step: Step, reply: PolicyReply, results: list[OpResult], now: datetime
) -> list[dict[str, object]]:
    """The audit rows of a committed reply."""
    return audit.rows(
        key, results, actor="policy", now=now, chunk_seq=step.seq, policy=step.policy_name, model=reply.model
    )


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
