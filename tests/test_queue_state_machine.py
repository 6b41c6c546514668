"""The chunk queue under random interleavings (hypothesis `RuleBasedStateMachine`), on SQLite and
Postgres: strict order per session and exactly-once effects.

Two workers drive the real worker steps (`Worker.claim`, which starts the claimed head too,
`_start_next`, `_commit`, `_attempt_failed`, the queue's `requeue`/`abandon`) on two sessions of a
real database, with replies that insert "<session> chunk <seq>" as a semantic item; between them
the machine accepts chunks, retries failed ones, edits memory by hand (the worker's commit then sees a
stale version), expires leases (another worker may take the session over; the old one's result must
be dropped) and crashes workers (their chunk stays `processing` until a new holder restarts it).
After every step:

- the `done` chunks of a session are a prefix of its seqs (nothing overtakes), at most one chunk is
  `processing`, a `failed` chunk is exactly the session's `blocked_by_seq`, and a session with open
  chunks and no failed one is never parked (no ready time: no claim would find it);
- the semantic memory is the done chunks' texts, each once, in seq order, every done chunk has
  exactly one policy audit row, and no manual edit is lost.

At the end every failed chunk is retried and one worker drains the sessions: all chunks are `done`.

Cost: the examples share one started service per database (each example is a tenant of its own), the
service's background polling is off (nothing here waits on it; the test drives every step itself), each
invariant check reads both sessions in one transaction (and their memories concurrently), the final drain
looks for failed chunks only when it finds nothing to claim, and rules that would do nothing are disabled
(a retry with no failed chunk; an edit while no worker holds the session, which no commit can race;
accepting more chunks into a session that already has `BACKLOG` open ones).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import service_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select, update

from app.ingest.prepare import ChunkIn
from app.ingest.views import Views
from app.ingest.worker import Step, Worker, WorkerConfig, _Commit
from app.policy.backend import PolicyReply, Usage
from app.policy.parser import ToolCall
from app.service import MemoryService
from app.store.models import Chunk, ChunkStatus, OperationLog, Session
from app.store.sessions import SessionKey
from app.store.types import utcnow

# Bounded so that each database's run stays well under a minute on a shared 2-core machine.
EXAMPLES = 12
STEPS = 30
SESSIONS = ("a", "b")
WORKERS = 2
BACKLOG = 3  # open chunks per session beyond which `accept` waits for the workers
OUTCOMES: Counter[str] = Counter()  # how often each interesting path ran (printed with -s)


def _reply(key: SessionKey, seq: int) -> PolicyReply:
    content = f"{key[1]} chunk {seq}"
    calls = [
        ToolCall("new_memory_insert", {"memory_type": "semantic_memory", "content": content}),
        # Core is what a manual edit may also write: the case where the reply must be proposed again.
        ToolCall("memory_update", {"memory_type": "core_memory", "new_content": f"up to {content}"}),
    ]
    return PolicyReply(calls=calls, raw_text="", usage=Usage(), model="scripted", latency_s=0.0)


CALLS_PER_REPLY = 2


@dataclass
class _Driver:
    worker: Worker
    key: SessionKey | None = None  # the session this worker believes it holds
    step: Step | None = None  # the chunk it is working on


class QueueMachine(RuleBasedStateMachine):
    # One started service per database, shared by the examples (set by the test).
    loop: asyncio.AbstractEventLoop
    service: MemoryService

    def __init__(self) -> None:
        super().__init__()
        self.tenant = f"t-{uuid.uuid4().hex[:12]}"  # examples share the database, never a tenant
        config = WorkerConfig(poll_s=0.05, attempt_timeout_s=5.0)
        views = Views()  # the workers of one process share the memories they last committed
        self.drivers = [
            _Driver(
                Worker(
                    queue=self.service.queue,
                    policy=self.service.policy,
                    applier=self.service.applier,
                    config=config,
                    owner=f"{self.tenant}:w{n}",
                    views=views,
                )
            )
            for n in range(WORKERS)
        ]
        self.accepted: Counter[str] = Counter()
        self.open: Counter[str] = Counter()  # chunks not done, as of the last check
        self.failed: set[str] = set()  # sessions with a failed chunk
        self.edits: dict[str, list[str]] = {session: [] for session in SESSIONS}  # episodic inserts
        self.edit_count = 0
        self.outcomes = OUTCOMES  # counted over all examples, for the report below

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def key(self, session: str) -> SessionKey:
        return (self.tenant, session)

    # --- the outside world ---

    @initialize()
    def first_chunks(self) -> None:
        for session in SESSIONS:
            self._accept(session, 2)

    @precondition(lambda self: any(self.open[s] < BACKLOG for s in SESSIONS))
    @rule(data=st.data(), count=st.integers(1, 3))
    def accept(self, data: st.DataObject, count: int) -> None:
        session = data.draw(st.sampled_from([s for s in SESSIONS if self.open[s] < BACKLOG]), label="session")
        self._accept(session, count)

    def _accept(self, session: str, count: int) -> None:
        self.run(
            self.service.ingestion.ingest(
                self.tenant, session, [ChunkIn(f"text {n}") for n in range(count)], wait=False
            )
        )
        self.accepted[session] += count
        self.open[session] += count

    @precondition(lambda self: bool(self.failed))
    @rule(data=st.data())
    def retry_failed(self, data: st.DataObject) -> None:
        session = data.draw(st.sampled_from(sorted(self.failed)), label="session")
        for chunk in self.run(self._chunks(self.key(session))):
            if chunk.status == ChunkStatus.FAILED:
                self.run(self.service.ingestion.retry_chunk(self.tenant, session, chunk.seq))
        self.failed.discard(session)

    @precondition(lambda self: any(d.key is not None for d in self.drivers))
    @rule(data=st.data())
    def manual_edit(self, data: st.DataObject) -> None:
        """A user edits a session that a worker holds; a worker mid-chunk there then commits on a
        changed version. The edit rewrites core, which the reply also updates: a conflict, so the worker
        proposes again on the fresh memory; the episodic insert must survive either way. (A reply that
        touches nothing an edit changed is applied on the edited memory: tests/test_ingest_edits.py.)"""
        key = self._pick(data, lambda d: d.key is not None).key
        assert key is not None
        session = key[1]
        self.edit_count += 1
        text = f"edit {self.edit_count}"
        self.run(self.service.memory.insert_item(self.tenant, session, "episodic", text))
        self.edits[session].append(text)
        self.run(self.service.memory.replace_core(self.tenant, session, f"core {text}"))
        busy = next((d for d in self.drivers if d.step is not None and d.key == self.key(session)), None)
        if busy is not None:
            self._move(busy)

    # --- workers (disruptions are enabled only when some worker can suffer them) ---

    def _pick(self, data: st.DataObject, ready: Any) -> _Driver:
        return data.draw(st.sampled_from([d for d in self.drivers if ready(d)]), label="worker")

    @rule(data=st.data(), moves=st.integers(1, 3), chain=st.booleans())
    def work(self, data: st.DataObject, moves: int, chain: bool) -> None:
        """A worker's next moves in its loop: claim a session, start its head, commit the reply (with
        `chain`, the commit starts the next head when it is runnable, as inside a claim)."""
        driver = data.draw(st.sampled_from(self.drivers), label="worker")
        for _ in range(moves):
            self._move(driver, chain=chain)

    def _move(self, driver: _Driver, *, chain: bool = True) -> None:
        self.outcomes["moves"] += 1
        if driver.key is None:
            # A session with nothing runnable is handed back by the claim (parked, or queued at its backoff).
            claimed = self.run(driver.worker.claim(1)).started
            if claimed:
                driver.key, driver.step = claimed[0]
                self.outcomes["claimed"] += 1
            if driver.key is not None and driver.key[0] != self.tenant:  # a failed example's leftover
                self.run(self._hand_back(driver))
        elif driver.step is None:
            driver.step = self.run(driver.worker._start_next(driver.key))
            if driver.step is None:  # nothing runnable: the queue released the lease
                driver.key = None
        else:
            reply = _reply(driver.key, driver.step.seq)
            outcome = self.run(driver.worker._commit(driver.key, driver.step, reply, chain=chain))
            if isinstance(outcome, Step):  # done, and the next head started in the same commit
                self.outcomes["CHAINED"] += 1
                driver.step = outcome
                return
            self.outcomes[outcome.name] += 1
            if outcome in (_Commit.LEASE_LOST, _Commit.RELEASED):
                driver.key = driver.step = None
            elif outcome is _Commit.DONE:
                driver.step = None
            # STALE: the step now holds the fresh memory; the worker proposes again (its next move).

    @precondition(lambda self: any(d.step is not None for d in self.drivers))
    @rule(data=st.data())
    def take_over(self, data: st.DataObject) -> None:
        """A worker stalls past its lease and another one takes the session over and restarts the
        chunk; the stalled worker's later commit must be dropped."""
        stalled = self._pick(data, lambda d: d.step is not None)
        self.run(self._expire(stalled.worker.owner))
        other = next(d for d in self.drivers if d is not stalled)
        self.run(self._hand_back(other))
        for _ in range(6):  # claim (skipping the other session) and restart the stalled chunk
            if other.key == stalled.key and other.step is not None:
                self._move(stalled)  # the stalled worker wakes up and commits: dropped
                assert stalled.key is None, "a worker committed a chunk after losing its lease"
                break
            self._move(other)
            if other.key is not None and other.key != stalled.key:
                self.run(self._hand_back(other))

    @precondition(lambda self: any(d.step is not None for d in self.drivers))
    # `final` rather than `retryable`: hypothesis favours False, and a retryable failure is the path
    # with more behind it (backoff, then success, or a second failure that exhausts the attempts).
    @rule(data=st.data(), final=st.booleans())
    def fail(self, data: st.DataObject, final: bool) -> None:
        driver = self._pick(data, lambda d: d.step is not None)
        assert driver.key is not None and driver.step is not None
        owner = driver.worker.owner
        status = self.run(
            self.service.queue.fail_attempt(
                driver.key, driver.step.seq, owner, "scripted", retryable=not final
            )
        )
        self.outcomes[f"fail:{status}"] += 1
        if status is ChunkStatus.FAILED:
            self.failed.add(driver.key[1])
        driver.step = None
        if status is not ChunkStatus.PENDING:  # failed (lease released) or lease lost
            driver.key = None

    @precondition(lambda self: any(d.key is not None and d.step is None for d in self.drivers))
    @rule(data=st.data())
    def requeue(self, data: st.DataObject) -> None:
        driver = self._pick(data, lambda d: d.key is not None and d.step is None)
        assert driver.key is not None
        self.run(self.service.queue.requeue(driver.key, driver.worker.owner))
        driver.key = None

    @precondition(lambda self: any(d.step is not None for d in self.drivers))
    @rule(data=st.data())
    def shut_down(self, data: st.DataObject) -> None:
        driver = self._pick(data, lambda d: d.step is not None)
        assert driver.key is not None and driver.step is not None
        self.run(self.service.queue.abandon(driver.key, driver.step.seq, driver.worker.owner))
        driver.key = driver.step = None

    @precondition(lambda self: any(d.key is not None for d in self.drivers))
    @rule(data=st.data())
    def lose_lease(self, data: st.DataObject) -> None:
        """The lease runs out (a stalled worker): another worker may claim the session meanwhile."""
        driver = self._pick(data, lambda d: d.key is not None)
        self.run(self._expire(driver.worker.owner))

    @precondition(lambda self: any(d.key is not None for d in self.drivers))
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """The worker dies mid-chunk: its chunk stays `processing` until the lease runs out."""
        driver = self._pick(data, lambda d: d.key is not None)
        self.run(self._expire(driver.worker.owner))
        driver.key = driver.step = None

    # --- invariants ---

    @invariant()
    def strict_order_and_exactly_once(self) -> None:
        self.run(self._check())

    def teardown(self) -> None:
        self.outcomes["examples"] += 1
        try:
            self.run(self._drain())
            self.run(self._check(drained=True))
        finally:
            for session in SESSIONS:
                if self.accepted[session]:
                    self.run(self.service.sessions.delete_session(self.tenant, session))

    # --- helpers ---

    async def _chunks(self, key: SessionKey) -> list[Chunk]:
        async with self.service.db.read() as db:
            query = (
                select(Chunk).where(Chunk.tenant_id == key[0], Chunk.session_id == key[1]).order_by(Chunk.seq)
            )
            return list((await db.execute(query)).scalars())

    async def _hand_back(self, driver: _Driver) -> None:
        """The driver's lease handed back cleanly: its chunk in flight (if any) back to pending."""
        if driver.key is not None and driver.step is not None:
            await self.service.queue.abandon(driver.key, driver.step.seq, driver.worker.owner)
        elif driver.key is not None:
            await self.service.queue.requeue(driver.key, driver.worker.owner)
        driver.key = driver.step = None

    async def _expire(self, owner: str) -> None:
        async with self.service.db.write() as db:
            past = utcnow().replace(year=2000)
            await db.execute(update(Session).where(Session.lease_owner == owner).values(lease_until=past))

    async def _check(self, *, drained: bool = False) -> None:
        """The invariants of both sessions, read in one transaction (then each memory through the
        service's read path, which must agree)."""
        tenant = self.tenant
        async with self.service.db.read() as db:
            chunks = (
                await db.execute(select(Chunk).where(Chunk.tenant_id == tenant).order_by(Chunk.seq))
            ).scalars()
            by_session: dict[str, list[Chunk]] = {session: [] for session in SESSIONS}
            for chunk in chunks:
                by_session[chunk.session_id].append(chunk)
            rows = list((await db.execute(select(Session).where(Session.tenant_id == tenant))).scalars())
            blocked = {row.id: row.blocked_by_seq for row in rows}
            parked = {row.id for row in rows if row.ready_at is None}
            audit: dict[str, dict[int | None, int]] = {session: {} for session in SESSIONS}
            counted = await db.execute(
                select(OperationLog.session_id, OperationLog.chunk_seq, func.count())
                .where(OperationLog.tenant_id == tenant, OperationLog.actor == "policy")
                .group_by(OperationLog.session_id, OperationLog.chunk_seq)
            )
            for session_id, seq, count in counted:
                audit[session_id][seq] = count
        for session, rows_of in by_session.items():
            assert len(rows_of) == self.accepted[session]
            statuses = [row.status for row in rows_of]
            done = [row.seq for row in rows_of if row.status == ChunkStatus.DONE]
            assert done == [row.seq for row in rows_of[: len(done)]], f"a chunk overtook another: {statuses}"
            assert statuses.count(ChunkStatus.PROCESSING) <= 1, statuses
            failed = [row.seq for row in rows_of if row.status == ChunkStatus.FAILED]
            assert len(failed) <= 1, statuses
            if session in blocked:
                assert blocked[session] == (failed[0] if failed else None), (blocked[session], statuses)
            # Parked (no ready time) with open chunks only behind a failed one: otherwise no claim
            # would ever find the session again (the commit parks it when it runs dry).
            if session in parked and not failed:
                assert ChunkStatus.PENDING not in statuses, ("parked with work", statuses)
                assert ChunkStatus.PROCESSING not in statuses, ("parked with work", statuses)
            assert audit[session] == {seq: CALLS_PER_REPLY for seq in done}
            self.open[session] = len(rows_of) - len(done)
            if drained:
                assert statuses == [ChunkStatus.DONE] * len(rows_of), statuses
        # Each memory through the service's read path (the state cache), both sessions at once.
        read = [session for session, rows_of in by_session.items() if rows_of]
        memories = await asyncio.gather(
            *(self.service.memory.get_memory(tenant, session) for session in read)
        )
        for session, memory in zip(read, memories, strict=True):
            done = [row.seq for row in by_session[session] if row.status == ChunkStatus.DONE]
            assert [item.content for item in memory.semantic] == [f"{session} chunk {seq}" for seq in done]
            # No manual edit is lost to a policy commit that raced it.
            assert [item.content for item in memory.episodic] == self.edits[session]

    async def _drain(self) -> None:
        """Retry what failed, let every lease run out, and run one worker until nothing is left."""
        for driver in self.drivers:
            await self._expire(driver.worker.owner)
        finisher = self.drivers[0]
        for _ in range(1000):
            claimed = await finisher.worker.claim(1)
            if claimed.leased and not claimed.started:  # handed back: parked, or its attempts spent
                continue
            if not claimed.leased:  # nothing claimable: done, or blocked by a failed chunk (also one
                # that the claim failed for its attempts, spent by crashed workers)
                async with self.service.db.read() as db:
                    query = select(Chunk).where(
                        Chunk.tenant_id == self.tenant, Chunk.status != ChunkStatus.DONE
                    )
                    open_chunks = list((await db.execute(query)).scalars())
                if not open_chunks:
                    return
                for chunk in open_chunks:
                    if chunk.status == ChunkStatus.FAILED:
                        await self.service.ingestion.retry_chunk(self.tenant, chunk.session_id, chunk.seq)
                await asyncio.sleep(0.01)
                continue
            finisher.key, finisher.step = claimed.started[0]
            key: SessionKey = finisher.key
            if key[0] != self.tenant:  # another example's leftover (only after a failed example)
                await self._hand_back(finisher)
                continue
            step: Step | None = finisher.step
            while step is not None:
                outcome = await finisher.worker._commit(key, step, _reply(key, step.seq), chain=True)
                if isinstance(outcome, Step):
                    step = outcome
                    continue
                assert outcome in (_Commit.DONE, _Commit.RELEASED)
                step = await finisher.worker._start_next(key)
            finisher.key = finisher.step = None
        raise AssertionError("the sessions did not drain")


@pytest.fixture
def machine_db(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """One database per backend for all examples (a tenant of their own each)."""
    if request.param == "sqlite":
        path = tmp_path / "machine.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    return str(request.getfixturevalue("migrated_pg_url"))


@pytest.mark.parametrize(
    "machine_db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_queue_keeps_order_and_exactly_once(machine_db: str) -> None:
    # The test drives every worker step itself and waits on nothing: the service's background polling
    # (pending gauge, ingest waiter) would only compete with it, so it polls once an hour.
    overrides: dict[str, Any] = {
        "workers": 0,
        "chunk_max_attempts": 2,
        "retry_backoff_s": 0.0,
        "poll_interval_s": 3600.0,
    }
    loop = asyncio.new_event_loop()
    service = MemoryService(service_settings(machine_db, **overrides))
    loop.run_until_complete(service.start(run_workers=False))
    machine = type("QueueMachineOn", (QueueMachine,), {"loop": loop, "service": service})
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,
                derandomize=True,  # the same interleavings on every run (CI); the rules do the exploring
            ),
        )
    finally:
        loop.run_until_complete(service.stop())
        loop.close()
    print(
        f"queue state machine on {machine_db.split(':')[0]}: {EXAMPLES} examples x {STEPS} steps, {dict(OUTCOMES)}"
    )
    # The interleavings that matter were reached, or the test proves little.
    assert OUTCOMES["DONE"] and OUTCOMES["STALE"] and OUTCOMES["LEASE_LOST"] and OUTCOMES["fail:pending"]
    OUTCOMES.clear()
