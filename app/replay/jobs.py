"""Replay jobs: started by an admin, run as asyncio tasks in the API process, kept in process memory
(the last `MAX_KEPT` per process; a restart forgets them: a replay writes nothing to the database).

A replay is CPU work in the API process (applying every chunk's operations, diffing two memories): replays
run one at a time, at most `MAX_ACTIVE` wait or run (more get 429), and their CPU steps run in a thread, so
that requests keep being answered while one runs."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Busy, NotFound
from app.ingest.prepare import validate_session_id
from app.memory import MemoryState
from app.qa import answer_question
from app.replay.diff import diff_memories, op_keys, side_stats
from app.replay.engine import replay_chunks
from app.replay.models import (
    AnswerPair,
    MemoryDiff,
    ReplayQuestion,
    ReplayReport,
    ReplayRequest,
    ReplayStatus,
    SideStats,
)
from app.replay.policies import ReplayPolicy, resolve
from app.store import audit, chunks, policies, sessions
from app.store.memory import load_state
from app.store.models import Session as SessionRow
from app.store.sessions import SessionKey

if TYPE_CHECKING:
    from app.service import MemoryService

log = logging.getLogger(__name__)

MAX_KEPT = 200
MAX_ACTIVE = 4  # queued or running, per process
_RETRY_AFTER_S = 5
_LOG_PAGE = 1000


@dataclass
class _Live:
    state: MemoryState
    operations: list[tuple[str, str]]
    chunks: list[tuple[int, str, datetime]]
    skipped: int


class Replays:
    def __init__(self, service: MemoryService) -> None:
        self.service = service
        self._jobs: OrderedDict[str, tuple[SessionKey, ReplayStatus]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot = asyncio.Semaphore(1)

    async def start(self, tenant: str, session_id: str, request: ReplayRequest) -> ReplayStatus:
        settings = self.service.settings
        validate_session_id(session_id, settings.max_session_id_length)
        if len(self._tasks) >= MAX_ACTIVE:
            raise Busy(
                f"{MAX_ACTIVE} replays are queued or running in this process; retry later",
                retry_after_s=_RETRY_AFTER_S,
            )
        key = (tenant, session_id)
        async with self.service.db.read() as db:
            row = await sessions.get_session(db, key)
            if row is None:
                raise NotFound(f"session {session_id!r} not found")
            registered = await policies.by_name(db, request.policy)
            if registered is None:
                raise NotFound(f"no registered policy named {request.policy!r}")
            live = await _live(db, key, row)
        policy = resolve(request.policy, registered.manifest, self.service.policy, settings)
        status = ReplayStatus(
            id=secrets.token_hex(6),
            session_id=session_id,
            policy=request.policy,
            status="queued",
            started_at=datetime.now(UTC),
            finished_at=None,
            chunks_total=len(live.chunks),
            chunks_done=0,
            error=None,
            report=None,
        )
        self._jobs[status.id] = (key, status)
        while len(self._jobs) > MAX_KEPT:
            self._jobs.popitem(last=False)
        task = asyncio.create_task(self._run(status, policy, live, request), name=f"replay-{status.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return status.model_copy()

    def get(self, tenant: str, session_id: str, replay_id: str) -> ReplayStatus:
        validate_session_id(session_id, self.service.settings.max_session_id_length)
        found = self._jobs.get(replay_id)
        if found is None or found[0] != (tenant, session_id):
            raise NotFound(
                f"no replay {replay_id!r} of session {session_id!r} (replays live in process memory)"
            )
        return found[1].model_copy()

    def list(self, tenant: str, session_id: str) -> list[ReplayStatus]:
        validate_session_id(session_id, self.service.settings.max_session_id_length)
        return [
            status.model_copy()
            for key, status in reversed(self._jobs.values())
            if key == (tenant, session_id)
        ]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(
        self,
        status: ReplayStatus,
        policy: ReplayPolicy,
        live: _Live,
        request: ReplayRequest,
    ) -> None:
        def progress(done: int) -> None:
            status.chunks_done = done

        try:
            async with self._slot:
                status.status = "running"
                status.report = await self._report(status.id, policy, live, request, progress)
            status.status = "done"
        except asyncio.CancelledError:
            status.status, status.error = "failed", "cancelled: the service stopped"
            raise
        except Exception as exc:  # the job reports it; the service goes on
            log.exception("replay %s of %s failed", status.id, status.session_id)
            status.status, status.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            status.finished_at = datetime.now(UTC)
            if policy.owned:
                await policy.backend.aclose()

    async def _report(
        self,
        replay_id: str,
        policy: ReplayPolicy,
        live: _Live,
        request: ReplayRequest,
        progress: Callable[[int], None],
    ) -> ReplayReport:
        service, settings = self.service, self.service.settings
        replayed = await replay_chunks(
            policy,
            live.chunks,
            service.applier,
            timeout_s=settings.policy_timeout_s * (settings.policy_max_retries + 2),
            progress=progress,
        )
        answers = [await self._pair(replay_id, live.state, replayed.state, q) for q in request.questions]

        def compare() -> tuple[SideStats, SideStats, MemoryDiff]:
            return (
                side_stats(live.state, live.operations, service.counter),
                side_stats(replayed.state, op_keys(replayed.results), service.counter),
                diff_memories(live.state, replayed.state),  # up to a million similarity comparisons
            )

        live_stats, replay_stats, diff = await asyncio.to_thread(compare)
        return ReplayReport(
            policy=policy.name,
            model=replayed.model,
            chunks_replayed=len(live.chunks),
            chunks_skipped=live.skipped,
            parse_errors=replayed.parse_errors,
            parse_error_samples=replayed.parse_error_samples,
            policy_failures=replayed.failures,
            live=live_stats,
            replay=replay_stats,
            diff=diff,
            answers=answers,
            policy_latency_s=round(replayed.latency_s, 3),
        )

    async def _pair(
        self,
        replay_id: str,
        live: MemoryState,
        replay: MemoryState,
        question: ReplayQuestion,
    ) -> AnswerPair:
        service, settings = self.service, self.service.settings
        texts = []
        for side, state in (("live", live), ("replay", replay)):
            result = await answer_question(
                state,
                question.question,
                retriever=service.retriever,
                answerer=service.answerer,
                k=settings.answer_top_k,
                budget_tokens=settings.answer_context_tokens,
                counter=service.counter,
                key=(f"replay-{side}", replay_id),  # never the live session's cache slot
            )
            texts.append(result.answer)
        return AnswerPair(question=question.question, gold=question.answer, live=texts[0], replay=texts[1])


async def _live(db: AsyncSession, key: SessionKey, row: SessionRow) -> _Live:
    state = await load_state(db, row)
    log_rows = []
    after = 0
    while page := await audit.page(db, key, after_id=after, limit=_LOG_PAGE):
        log_rows += page
        after = page[-1].id
    rows = await chunks.all_for_session(db, key)
    done = [(chunk.seq, chunk.content, chunk.accepted_at) for chunk in rows if chunk.status == "done"]
    return _Live(
        state=state,
        operations=[(entry.tool, entry.status) for entry in log_rows if entry.actor == "policy"],
        chunks=done,
        skipped=len(rows) - len(done),
    )
