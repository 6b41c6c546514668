"""The application facade the API and CLI call (the SERVICE CONTRACT below is firm; implement it here).

## The service contract (shared by the store/ingest engineer and the API engineer)
Layering (ARCHITECTURE §1): `app.api` (thin FastAPI layer) → `app.service` (application facade) → `app.ingest`
(chunk log, workers) + `app.store` (SQLAlchemy 2 async models, repositories) + `app.qa`/`app.retrieval`/`app.policy`
+ `app.memory` (pure domain). Errors are `app.errors.*` (ServiceError subclasses with status_code/code); the API
maps them to `{"error": {"code", "message", "details"?}}`.

`app/service.py` (written by the store/ingest engineer) exposes:
```python
@dataclass class ChunkIn: content: str; timestamp: datetime | None = None; idempotency_key: str | None = None; metadata: dict | None = None
@dataclass class OperationOut: tool: str; memory_type: str; memory_id: str | None; status: str; content: str | None; error: str | None
@dataclass class ChunkOutcome: seq: int; status: str  # pending|processing|done|failed
                                operations: list[OperationOut]; error: str | None; duplicate: bool  # idempotent replay
@dataclass class IngestOutcome: session_id: str; chunks: list[ChunkOutcome]; complete: bool  # False → API answers 202
class MemoryService:
    def __init__(self, settings: Settings, *, policy: PolicyBackend | None = None, answerer: Answerer | None = None) -> None
    async def start(self, *, run_workers: bool) -> None    # connect DB, (optionally) start worker tasks
    async def stop(self) -> None
    async def authenticate(self, api_key: str) -> Principal(tenant_id: str, admin: bool)   # raises Unauthorized
    # every method below takes tenant first; another tenant's session is NotFound (404), never 403
    async def ingest(self, tenant, session_id, chunks: list[ChunkIn], *, wait: bool) -> IngestOutcome
    async def get_session(self, tenant, session_id) -> dict   # id, created_at, version, next_seq, counts by chunk status, item counts, memory tokens
    async def list_sessions(self, tenant, *, limit=100, offset=0) -> list[dict]
    async def delete_session(self, tenant, session_id) -> None
    async def get_memory(self, tenant, session_id) -> dict   # {core, semantic:[{id,content,created_at,updated_at,source_seq}], episodic:[...], version, tokens}
    async def edit_memory(self, tenant, session_id, op: Operation) -> OperationOut   # manual edit, actor "user", same Applier + audit log; status error → BadRequest/NotFound as fits
    async def list_chunks(self, tenant, session_id, *, status=None, after_seq=0, limit=100) -> list[dict]
    async def list_operations(self, tenant, session_id, *, after_id=0, limit=100) -> list[dict]  # actor, policy name/version, chunk seq, tool, kind, item id, status, before, after, error, at
    async def retry_chunk(self, tenant, session_id, seq) -> ChunkOutcome   # only failed chunks (else Conflict)
    async def export_session(self, tenant, session_id, *, include_chunks: bool) -> dict
    async def import_session(self, tenant, session_id, payload: dict) -> dict    # into a new or empty session (else Conflict)
    async def answer(self, tenant, session_id, question: str, *, k: int | None) -> dict  # ARCH §6 shape
    async def search(self, tenant, session_id, query: str, *, k: int | None, memory_type: str | None) -> dict
    async def get_policy(self) -> dict        # active registry row
    async def set_policy(self, name: str) -> dict   # switch to a registered version (404 if unknown)
    async def register_policy(self, name, base_model, adapter_path, metrics: dict, manifest: dict) -> dict
    async def ready(self) -> dict             # {"database": bool, "policy": bool}
```
Validation that belongs in the service (so CLI and API share it): session id syntax/length
(`max_session_id_length`, e.g. `^[A-Za-z0-9._:-]{1,128}$`), empty/whitespace chunk → BadRequest, chunk over
`max_chunk_bytes` → PayloadTooLarge (413), chunks over `max_chunk_tokens` are split (split_text) into several seqs,
unknown memory type → BadRequest (or 422). Bad input changes nothing (validate the whole request before writing).

## Decisions taken in the implementation
- A chunk that fails `chunk_max_attempts` times blocks its session: later chunks stay `pending` (never
  overtake it), `get_session` shows `blocked_by_seq`, `wait=true` returns at once (202) for chunks behind
  it, and `retry_chunk` unblocks. Non-retryable policy errors (4xx) fail at once.
- The schema migrates itself at start-up when `MEMALPHA_AUTO_MIGRATE` is true; unset, only on SQLite. On
  an out-of-date schema `start()` raises `app.store.schema.SchemaNotReady` naming `memalpha migrate`.
- The registry row seeded from settings (`manifest.source == "settings"`) makes workers call the backend's
  configured model; any other active row's name is passed as the model (a LoRA adapter's served name).
- Extra methods: `create_api_key(tenant, admin=)` (returns the key once), `run_workers_until_stopped()`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import BadRequest, Conflict, NotFound, Unauthorized
from app.ingest.log import Accepted, accept
from app.ingest.pool import WorkerPool
from app.ingest.prepare import ChunkIn, prepare, validate_session_id
from app.ingest.waiting import ChunkWaiter
from app.ingest.wakeups import PgListener, Wakeups, announce
from app.ingest.worker import WorkerConfig, op_labels
from app.memory import LIST_KINDS, Applier, MemoryKind, MemoryLimits, MemoryState, Operation, Tool
from app.memory.ids import normalise_id
from app.metrics import OPERATIONS, PENDING_CHUNKS
from app.policy.backend import PolicyBackend
from app.qa import Answerer, answer_question, make_answerer
from app.retrieval import Retriever
from app.settings import Settings
from app.store import audit, chunks, exchange, keys, policies, sessions
from app.store.database import Database
from app.store.keys import Principal
from app.store.memory import insert_items, item_dict, item_row, load_state, save_state
from app.store.models import Chunk, OperationLog
from app.store.models import Session as SessionRow
from app.store.schema import ensure_schema
from app.store.sessions import SessionKey
from app.store.types import utcnow
from app.tokens import make_token_counter

log = logging.getLogger(__name__)

__all__ = ["ChunkIn", "ChunkOutcome", "IngestOutcome", "MemoryService", "OperationOut", "Principal"]

# Memory states kept for answering and searching, re-validated against the session's version.
_STATE_CACHE_SESSIONS = 256
_READY_TIMEOUT_S = 5.0


@dataclass
class OperationOut:
    tool: str
    memory_type: str
    memory_id: str | None
    status: str
    content: str | None
    error: str | None

    @classmethod
    def of(
        cls,
        tool: str,
        memory_type: str,
        memory_id: str | None,
        status: str,
        before: str | None,
        after: str | None,
        error: str | None,
    ) -> OperationOut:
        # What the operation wrote; for a delete, what it removed.
        content = before if tool == Tool.DELETE else after
        return cls(str(tool), memory_type, memory_id, status, content, error)


@dataclass
class ChunkOutcome:
    seq: int
    status: str  # pending | processing | done | failed
    operations: list[OperationOut]
    error: str | None
    duplicate: bool  # an idempotent replay of an already accepted chunk


@dataclass
class IngestOutcome:
    session_id: str
    chunks: list[ChunkOutcome]
    complete: bool  # every chunk done or failed; False → the API answers 202


class MemoryService:
    def __init__(
        self, settings: Settings, *, policy: PolicyBackend | None = None, answerer: Answerer | None = None
    ) -> None:
        self.settings = settings
        self.counter = make_token_counter(settings.tokenizer_file)
        self.limits = MemoryLimits(
            core_tokens=settings.core_token_limit,
            max_item_tokens=settings.max_item_tokens,
            max_items_per_kind=settings.max_items_per_kind,
        )
        self.applier = Applier(self.limits, self.counter)
        self.retriever = Retriever()
        self.wakeups = Wakeups()
        self._given_policy, self._given_answerer = policy, answerer
        self._policy: PolicyBackend | None = None
        self._answerer: Answerer | None = None
        self._db: Database | None = None
        self._pool: WorkerPool | None = None
        self._listener: PgListener | None = None
        self._gauge: asyncio.Task[None] | None = None
        self._waiter: ChunkWaiter | None = None
        self._states: OrderedDict[SessionKey, tuple[datetime, MemoryState]] = OrderedDict()

    # --- lifecycle ---

    async def start(self, *, run_workers: bool) -> None:
        settings = self.settings
        db = Database(settings.database_url, pool_size=settings.db_pool_size)
        try:
            auto = settings.auto_migrate if settings.auto_migrate is not None else db.is_sqlite
            await ensure_schema(db, auto_migrate=auto)
            async with db.write() as session:
                now = utcnow()
                default = settings.policy_model if settings.policy_backend == "openai" else "extractive"
                await policies.seed_default(session, name=default, base_model=default, now=now)
                if settings.bootstrap_api_key is not None:
                    await keys.store_key(
                        session,
                        settings.bootstrap_api_key.get_secret_value(),
                        tenant_id=settings.bootstrap_tenant,
                        admin=settings.bootstrap_admin,
                        now=now,
                    )
        except BaseException:
            await db.dispose()
            raise
        self._db = db
        if self._given_policy is None:
            from app.policy.factory import make_policy  # the backends' client libraries load only when used

            self._policy = make_policy(settings)
        else:
            self._policy = self._given_policy
        self._answerer = self._given_answerer or make_answerer(settings)
        if not db.is_sqlite:
            self._listener = PgListener(db.url, self.wakeups, retry_s=settings.poll_interval_s)
            self._listener.start()
        if run_workers and settings.workers > 0:
            self._pool = WorkerPool(
                db=db,
                policy=self._policy,
                applier=self.applier,
                wakeups=self.wakeups,
                config=WorkerConfig.from_settings(settings),
                count=settings.workers,
            )
            self._pool.start()
        self._waiter = ChunkWaiter(db, self.wakeups, settings.poll_interval_s)
        self._waiter.start()
        self._gauge = asyncio.create_task(self._refresh_gauge(), name="memalpha-pending-gauge")

    async def stop(self) -> None:
        if self._waiter is not None:
            await self._waiter.stop()
            self._waiter = None
        if self._gauge is not None:
            self._gauge.cancel()
            await asyncio.gather(self._gauge, return_exceptions=True)
            self._gauge = None
        if self._pool is not None:
            await self._pool.stop()
            self._pool = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._policy is not None and self._given_policy is None:
            await self._policy.aclose()
        if self._answerer is not None and self._given_answerer is None:
            await self._answerer.aclose()
        self._policy = self._answerer = None
        if self._db is not None:
            await self._db.dispose()
            self._db = None

    async def run_workers_until_stopped(self) -> None:
        """For `memalpha worker`: block while the worker tasks run."""
        if self._pool is None:
            raise RuntimeError("start(run_workers=True) first")
        await self._pool.wait()

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("the service is not started")
        return self._db

    @property
    def policy(self) -> PolicyBackend:
        if self._policy is None:
            raise RuntimeError("the service is not started")
        return self._policy

    async def _refresh_gauge(self) -> None:
        while True:
            try:
                async with self.db.read() as session:
                    PENDING_CHUNKS.set(await chunks.open_count(session))
            except Exception:  # metrics must not take the service down
                log.exception("refreshing the pending-chunks gauge failed")
            await asyncio.sleep(self.settings.poll_interval_s)

    # --- auth ---

    async def authenticate(self, api_key: str) -> Principal:
        async with self.db.read() as session:
            principal = await keys.authenticate(session, api_key)
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        return principal

    async def create_api_key(self, tenant_id: str, *, admin: bool = False) -> str:
        """A new key for `tenant_id` (created on first use); the only time the key is visible."""
        key = keys.new_key()
        async with self.db.write() as session:
            await keys.store_key(session, key, tenant_id=tenant_id, admin=admin, now=utcnow())
        return key

    # --- ingestion ---

    async def ingest(
        self, tenant: str, session_id: str, chunks_in: list[ChunkIn], *, wait: bool
    ) -> IngestOutcome:
        key = self._key(tenant, session_id)
        inputs = prepare(
            chunks_in,
            max_chunk_bytes=self.settings.max_chunk_bytes,
            max_chunk_tokens=self.settings.max_chunk_tokens,
            counter=self.counter,
        )
        accepted = await accept(self.db, self.wakeups, key, inputs, utcnow())
        seqs = [seq for item in accepted for seq in item.seqs]
        if wait:
            assert self._waiter is not None
            await self._waiter.wait(key, seqs, self.settings.ingest_wait_timeout_s)
        outcomes = await self._outcomes(key, accepted)
        complete = all(outcome.status in chunks.FINAL_STATUSES for outcome in outcomes)
        return IngestOutcome(session_id=session_id, chunks=outcomes, complete=complete)

    async def _outcomes(self, key: SessionKey, accepted: list[Accepted]) -> list[ChunkOutcome]:
        seqs = [seq for item in accepted for seq in item.seqs]
        async with self.db.read() as session:
            rows = await chunks.by_seqs(session, key, seqs)
            operations = await audit.for_chunks(session, key, seqs)
        out = []
        for item in accepted:
            for seq in item.seqs:
                row = rows.get(seq)
                if row is None:  # the session was deleted meanwhile
                    raise NotFound(f"session {key[1]!r} not found")
                out.append(
                    ChunkOutcome(
                        seq=seq,
                        status=row.status,
                        operations=[_operation_out(op) for op in operations[seq]],
                        error=row.error if row.status != "done" else None,
                        duplicate=item.duplicate,
                    )
                )
        return out

    async def retry_chunk(self, tenant: str, session_id: str, seq: int) -> ChunkOutcome:
        key = self._key(tenant, session_id)
        async with self.db.write() as session:
            row = await self._session_row(session, key, for_update=True)
            chunk = await chunks.get(session, key, seq)
            if chunk is None:
                raise NotFound(f"chunk {seq} not found in session {session_id!r}")
            if chunk.status != "failed":
                raise Conflict(f"chunk {seq} is {chunk.status}; only failed chunks can be retried")
            now = utcnow()
            chunk.status, chunk.attempts, chunk.next_attempt_at, chunk.done_at = "pending", 0, now, None
            if row.blocked_by_seq == seq:
                row.blocked_by_seq = None
            row.ready_at, row.updated_at = now, now
            await announce(session, work=True)
        self.wakeups.work()
        return ChunkOutcome(seq=seq, status="pending", operations=[], error=chunk.error, duplicate=False)

    # --- sessions ---

    async def get_session(self, tenant: str, session_id: str) -> dict[str, Any]:
        key = self._key(tenant, session_id)
        async with self.db.read() as session:
            row = await self._session_row(session, key)
            counted = await sessions.counts(session, tenant, [session_id])
            state = await load_state(session, row)
        return {**sessions.summary(row, counted[session_id]), "memory_tokens": self._tokens(state)["total"]}

    async def list_sessions(self, tenant: str, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        if limit < 1 or offset < 0:
            raise BadRequest("limit must be positive and offset not negative")
        async with self.db.read() as session:
            rows = await sessions.list_sessions(session, tenant, limit=limit, offset=offset)
            counted = await sessions.counts(session, tenant, [row.id for row in rows])
        return [sessions.summary(row, counted[row.id]) for row in rows]

    async def delete_session(self, tenant: str, session_id: str) -> None:
        key = self._key(tenant, session_id)
        async with self.db.write() as session:
            await self._session_row(session, key, for_update=True)
            await sessions.delete_session(session, key)
            await announce(session, finished=key)
        self._states.pop(key, None)
        self.wakeups.finished(key)

    async def list_chunks(
        self, tenant: str, session_id: str, *, status: str | None = None, after_seq: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        if status is not None and status not in sessions.CHUNK_STATUSES:
            raise BadRequest(f"status must be one of {', '.join(sessions.CHUNK_STATUSES)}")
        key = self._key(tenant, session_id)
        async with self.db.read() as session:
            await self._session_row(session, key)
            rows = await chunks.page(session, key, status=status, after_seq=after_seq, limit=limit)
        return [chunks.chunk_dict(row) for row in rows]

    async def list_operations(
        self, tenant: str, session_id: str, *, after_id: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        key = self._key(tenant, session_id)
        async with self.db.read() as session:
            await self._session_row(session, key)
            rows = await audit.page(session, key, after_id=after_id, limit=limit)
        return [audit.operation_dict(row) for row in rows]

    # --- memory ---

    async def get_memory(self, tenant: str, session_id: str) -> dict[str, Any]:
        state = await self._state(self._key(tenant, session_id))
        return {
            "core": state.core,
            "core_truncated": state.core_truncated,
            **{kind.value: [item_dict(item) for item in state.items(kind)] for kind in LIST_KINDS},
            "version": state.version,
            "tokens": self._tokens(state),
        }

    async def edit_memory(self, tenant: str, session_id: str, op: Operation) -> OperationOut:
        """A manual edit: the policy's apply rules, logged with actor `user`. Rejected edits change
        nothing and are not logged."""
        key = self._key(tenant, session_id)
        kind = MemoryKind.parse(op.memory_type)
        if kind is None:
            raise BadRequest(f"unknown memory type {op.memory_type!r}; use core, semantic or episodic")
        async with self.db.write() as session:
            row = await self._session_row(session, key, for_update=True)
            before = await load_state(session, row)
            after = before.copy()
            now = utcnow()
            result = self.applier.apply(after, op, now=now)
            if result.status == "error":
                wanted = normalise_id(op.memory_id)
                if kind is not MemoryKind.CORE and wanted is not None and before.find(kind, wanted) is None:
                    raise NotFound(result.error or "no such item")
                raise BadRequest(result.error or "invalid edit")
            await save_state(session, row, before, after)
            await audit.record(session, key, [result], actor="user", now=now)
            row.updated_at = now
        OPERATIONS.labels(*op_labels(result)).inc()
        return OperationOut.of(
            result.tool,
            result.memory_type,
            result.item_id,
            result.status,
            result.before,
            result.after,
            result.error,
        )

    async def answer(self, tenant: str, session_id: str, question: str, *, k: int | None) -> dict[str, Any]:
        if not question.strip():
            raise BadRequest("the question is empty")
        key = self._key(tenant, session_id)
        state = await self._state(key)
        assert self._answerer is not None
        result = await answer_question(
            state,
            question,
            retriever=self.retriever,
            answerer=self._answerer,
            k=self._k(k),
            budget_tokens=self.settings.answer_context_tokens,
            counter=self.counter,
            key=key,
        )
        return {
            "question": result.question,
            "answer": result.answer,
            "evidence": {
                "core": result.core,
                **{
                    kind: [{"id": e.id, "content": e.content, "score": e.score} for e in found]
                    for kind, found in (("semantic", result.semantic), ("episodic", result.episodic))
                },
            },
            "memory_version": state.version,
            "model": result.model,
            "usage": result.usage,
            "k": result.k,
            "latency_s": result.latency_s,
        }

    async def search(
        self, tenant: str, session_id: str, query: str, *, k: int | None, memory_type: str | None
    ) -> dict[str, Any]:
        if not query.strip():
            raise BadRequest("the query is empty")
        kinds: tuple[MemoryKind, ...] = LIST_KINDS
        if memory_type is not None:
            kind = MemoryKind.parse(memory_type)
            if kind is None or kind is MemoryKind.CORE:
                raise BadRequest(f"memory_type must be semantic or episodic, not {memory_type!r}")
            kinds = (kind,)
        key = self._key(tenant, session_id)
        state = await self._state(key)
        found = self.retriever.search(state, query, self._k(k), kinds, key=key)
        return {
            "query": query,
            "memory_version": state.version,
            **{
                kind.value: [{**item_dict(hit.item), "score": hit.score} for hit in hits]
                for kind, hits in found.items()
            },
        }

    # --- export / import ---

    async def export_session(self, tenant: str, session_id: str, *, include_chunks: bool) -> dict[str, Any]:
        key = self._key(tenant, session_id)
        async with self.db.read() as session:
            row = await self._session_row(session, key)
            state = await load_state(session, row)
            rows = await chunks.all_for_session(session, key) if include_chunks else None
        return exchange.export_payload(session_id, state, rows)

    async def import_session(self, tenant: str, session_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Into a new or empty session only (else Conflict); chunks keep their seqs and statuses."""
        key = self._key(tenant, session_id)
        parsed = exchange.parse_import(payload, self.limits, self.counter)
        state, results = exchange.to_state(parsed.memory)
        records = parsed.chunks or []
        async with self.db.write() as session:
            now = utcnow()
            row = await sessions.lock_or_create_session(session, key, now)
            if row.version or row.next_seq > 1 or row.core or row.next_item:
                raise Conflict(f"session {session_id!r} is not empty; import needs a new or empty session")
            await insert_items(
                session,
                (
                    item_row(key, kind, item, position)
                    for kind in LIST_KINDS
                    for position, item in enumerate(state.items(kind))
                ),
            )
            await audit.record(session, key, results, actor="import", now=now)
            row.core, row.core_truncated = state.core, state.core_truncated
            row.version, row.next_item, row.updated_at = state.version, state.next_item, now
            if records:
                await session.execute(
                    Chunk.__table__.insert(), exchange.chunk_rows(tenant, session_id, records)
                )
                row.next_seq = max(record.seq for record in records) + 1
                if any(record.status != "done" for record in records):
                    row.ready_at = now  # a worker finds the head: pending runs, failed blocks
                    await announce(session, work=True)
        self.wakeups.work()
        return {
            "session_id": session_id,
            "version": state.version,
            "imported": {
                "core": bool(state.core),
                "semantic": len(state.semantic),
                "episodic": len(state.episodic),
                "chunks": len(records),
            },
        }

    # --- policy registry ---

    async def get_policy(self) -> dict[str, Any]:
        async with self.db.read() as session:
            row = await policies.active(session)
            if row is None:
                raise NotFound("no active policy")
            return {**policies.policy_dict(row), "backend": self.settings.policy_backend}

    async def set_policy(self, name: str) -> dict[str, Any]:
        async with self.db.write() as session:
            row = await policies.by_name(session, name)
            if row is None:
                raise NotFound(f"no registered policy named {name!r}")
            await policies.activate(session, row)
            return {**policies.policy_dict(row), "backend": self.settings.policy_backend}

    async def register_policy(
        self,
        name: str,
        base_model: str,
        adapter_path: str | None,
        metrics: dict[str, Any],
        manifest: dict[str, Any],
    ) -> dict[str, Any]:
        async with self.db.write() as session:
            if await policies.by_name(session, name) is not None:
                raise Conflict(f"a policy named {name!r} is already registered; names are never reused")
            row = await policies.register(
                session,
                name=name,
                base_model=base_model,
                adapter_path=adapter_path,
                metrics=metrics,
                manifest=manifest,
                now=utcnow(),
            )
            return policies.policy_dict(row)

    async def ready(self) -> dict[str, bool]:
        return {"database": await self._database_ok(), "policy": await self._policy_ok()}

    async def _database_ok(self) -> bool:
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S), self.db.read() as session:
                await session.execute(text("SELECT 1"))
        except Exception:
            log.warning("readiness: database unreachable", exc_info=True)
            return False
        return True

    async def _policy_ok(self) -> bool:
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                return await self.policy.health()
        except Exception:
            log.warning("readiness: policy backend unreachable", exc_info=True)
            return False

    # --- helpers ---

    def _key(self, tenant: str, session_id: str) -> SessionKey:
        validate_session_id(session_id, self.settings.max_session_id_length)
        return (tenant, session_id)

    def _k(self, k: int | None) -> int:
        if k is not None and k < 1:
            raise BadRequest("k must be at least 1")
        return k or self.settings.answer_top_k

    @staticmethod
    async def _session_row(session: AsyncSession, key: SessionKey, *, for_update: bool = False) -> SessionRow:
        row = await sessions.get_session(session, key, for_update=for_update)
        if row is None:
            raise NotFound(f"session {key[1]!r} not found")
        return row

    async def _state(self, key: SessionKey) -> MemoryState:
        """The session's memory, from the cache when its version (and creation time) still match."""
        async with self.db.read() as session:
            row = await self._session_row(session, key)
            cached = self._states.get(key)
            if cached is not None and cached[0] == row.created_at and cached[1].version == row.version:
                self._states.move_to_end(key)
                return cached[1]
            state = await load_state(session, row)
        self._states[key] = (row.created_at, state)
        self._states.move_to_end(key)
        while len(self._states) > _STATE_CACHE_SESSIONS:
            self._states.popitem(last=False)
        return state

    def _tokens(self, state: MemoryState) -> dict[str, int]:
        counts = {"core": self.counter.count(state.core)}
        for kind in LIST_KINDS:
            counts[kind.value] = sum(self.counter.count(item.content) for item in state.items(kind))
        counts["total"] = sum(counts.values())
        return counts


def _operation_out(row: OperationLog) -> OperationOut:
    return OperationOut.of(
        row.tool, row.memory_type, row.item_id, row.status, row.before, row.after, row.error
    )
