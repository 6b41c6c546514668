"""The service's composition root: `MemoryService` builds and stops what the use cases run on (database,
policy and answerer backends, the Postgres listener, the worker pool, the pending-chunks gauge) and holds
one object per use case, each in its own module of this package:

- `service.access` (`access.py`): `authenticate`, `create_api_key`
- `service.ingestion` (`ingest.py`): `ingest`, `retry_chunk`
- `service.sessions` (`sessions.py`): `get_session`, `list_sessions`, `delete_session`, `list_chunks`,
  `list_operations`
- `service.memory` (`memory.py`): `get_memory`, `edit_memory`, `replace_core`, `clear_core`,
  `insert_item`, `update_item`, `delete_item`
- `service.answers` (`answers.py`): `answer`, `search`
- `service.exchange` (`exchange.py`): `export_session`, `import_session`
- `service.policies` (`policies.py`): `get_policy`, `set_policy`, `register_policy`
- the root itself: `start(run_workers=)`, `begin_shutdown()`, `stop()`, `run_workers_until_stopped()`,
  `ready()`

Use cases return the response models of `app.contracts.schemas` (typed and immutable, datetimes kept as
datetimes): the one definition of each shape, which the API, the MCP tools and the trainer's registry pass
on as they are. The store maps its rows to them; `results.py` builds them from the domain's objects.

Every use case takes the tenant first; another tenant's session is NotFound (404), never 403. Errors are
`app.errors.*` (ServiceError subclasses with status_code/code); the API maps them to `{"error": {"code",
"message", "details"?}}`. Validation lives in the use cases (so CLI, MCP and API share it): session id
syntax/length, empty chunks, chunk size (413), long chunks split into several seqs, memory types. Bad
input changes nothing (the whole request is validated before anything is written).

## Decisions taken in the implementation
- A chunk that fails `chunk_max_attempts` times blocks its session: later chunks stay `pending` (never
  overtake it), `get_session` shows `blocked_by_seq`, `wait=true` returns at once (202) for chunks behind
  it, and `retry_chunk` unblocks. Non-retryable policy errors (4xx) fail at once.
- The schema migrates itself at start-up when `MEMALPHA_AUTO_MIGRATE` is true; unset, only on SQLite. On
  an out-of-date schema `start()` raises `app.store.schema.SchemaNotReady` naming `memalpha migrate`.
- The registry row seeded from settings (`manifest.source == "settings"`) makes workers call the backend's
  configured model; any other active row's name is passed as the model (a LoRA adapter's served name).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TypeVar

from sqlalchemy import text

from app.backends import make_answerer, make_policy, memory_limits
from app.contracts.schemas import MemoryTokens
from app.errors import BadRequest
from app.ingest.pool import WorkerPool
from app.ingest.prepare import validate_session_id
from app.ingest.queue import ChunkQueue, QueueConfig
from app.ingest.shutdown import run_to_completion
from app.ingest.waiting import ChunkWaiter
from app.ingest.wakeups import PgListener, Wakeups
from app.ingest.worker import WorkerConfig
from app.memory import LIST_KINDS, Applier, MemoryState
from app.metrics import POLICY_UP, RETRIEVAL_LATENCY
from app.policy.backend import PolicyBackend
from app.qa import Answerer
from app.retrieval import Retriever
from app.service.access import Access
from app.service.answers import Answers
from app.service.exchange import Exchange
from app.service.ingest import Ingestion
from app.service.memory import Memory
from app.service.policies import Policies
from app.service.reads import StateCache, session_row
from app.service.sessions import Sessions
from app.settings import Settings
from app.store import keys, policies
from app.store.database import Database
from app.store.schema import ensure_schema
from app.store.sessions import SessionKey
from app.store.types import utcnow
from app.tokens import make_token_counter

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_READY_TIMEOUT_S = 5.0


class MemoryService:
    def __init__(
        self, settings: Settings, *, policy: PolicyBackend | None = None, answerer: Answerer | None = None
    ) -> None:
        self.settings = settings
        self.counter = make_token_counter(settings.tokenizer_file)
        self.limits = memory_limits(settings)
        self.applier = Applier(self.limits, self.counter)
        self.retriever = Retriever(
            settings.retrieval_cache_entries, settings.retrieval_scorer, observe=RETRIEVAL_LATENCY.observe
        )
        self.wakeups = Wakeups()
        self._queue: ChunkQueue | None = None
        self._given_policy, self._given_answerer = policy, answerer
        self._policy: PolicyBackend | None = None
        self._answerer: Answerer | None = None
        self._db: Database | None = None
        self._pool: WorkerPool | None = None
        self._listener: PgListener | None = None
        self._gauge: asyncio.Task[None] | None = None
        self._waiter: ChunkWaiter | None = None
        self.states = StateCache()
        # The use cases, each a small module of `app.service` that receives this root.
        self.access = Access(self)
        self.ingestion = Ingestion(self)
        self.sessions = Sessions(self)
        self.memory = Memory(self)
        self.answers = Answers(self)
        self.exchange = Exchange(self)
        self.policies = Policies(self)

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
        self._queue = ChunkQueue(db, self.wakeups, QueueConfig.from_settings(settings))
        self._policy = self._given_policy or make_policy(settings)
        self._answerer = self._given_answerer or make_answerer(settings)
        if not db.is_sqlite:
            self._listener = PgListener(
                db.url, self.wakeups, retry_s=settings.poll_interval_s, own_backends=db.backend_pids
            )
            self._listener.start()
        if run_workers and settings.workers > 0:
            self._pool = WorkerPool(
                queue=self._queue,
                policy=self._policy,
                applier=self.applier,
                config=WorkerConfig.from_settings(settings),
                claimers=settings.workers,
                concurrency=settings.policy_concurrency,
            )
            self._pool.start()
        self._waiter = ChunkWaiter(db, self.wakeups, settings.poll_interval_s)
        self._waiter.start()
        self._gauge = asyncio.create_task(self._refresh_gauge(), name="memalpha-pending-gauge")

    def begin_shutdown(self) -> None:
        """At SIGTERM, before the HTTP server drains its connections: claim no more chunks (those in
        flight get `shutdown_grace_s` to commit, see `stop`) and let waiting ingests answer now."""
        if self._pool is not None:
            self._pool.begin_stop(self.settings.shutdown_grace_s)
        if self._waiter is not None:
            self._waiter.release()

    async def stop(self) -> None:
        """Bounded: `shutdown_grace_s` (counted from `begin_shutdown` when called) plus a few seconds."""
        self.begin_shutdown()
        if self._pool is not None:
            await self._pool.stop(self.settings.shutdown_grace_s)
            self._pool = None
        if self._waiter is not None:
            await self._waiter.stop()
            self._waiter = None
        if self._gauge is not None:
            self._gauge.cancel()
            await asyncio.gather(self._gauge, return_exceptions=True)
            self._gauge = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._policy is not None and self._given_policy is None:
            await self._policy.aclose()
        if self._answerer is not None and self._given_answerer is None:
            await self._answerer.aclose()
        self._policy = self._answerer = None
        self._queue = None
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
        return self._started(self._db)

    @property
    def queue(self) -> ChunkQueue:
        return self._started(self._queue)

    @property
    def policy(self) -> PolicyBackend:
        return self._started(self._policy)

    @staticmethod
    def _started(part: _T | None) -> _T:
        if part is None:
            raise RuntimeError("the service is not started")
        return part

    @property
    def answerer(self) -> Answerer:
        return self._started(self._answerer)

    @property
    def waiter(self) -> ChunkWaiter:
        return self._started(self._waiter)

    async def _refresh_gauge(self) -> None:
        while True:
            try:
                # Cancelled by `stop`: the count finishes first (see ChunkWaiter._poll).
                await run_to_completion(self.queue.refresh_backlog())
            except Exception as exc:  # metrics must not take the service down
                if not self.db.outage.failed(exc):
                    log.exception("refreshing the pending-chunks gauge failed")
            await asyncio.sleep(self.settings.poll_interval_s)

    # --- health ---

    async def ready(self, *, full: bool = False) -> dict[str, bool]:
        """The database decides readiness (ingestion is durable, answers need no policy); the policy
        server's health is a detail on request and a metric."""
        checks = {"database": await self._database_ok()}
        if full:
            checks["policy"] = await self._policy_ok()
            POLICY_UP.set(checks["policy"])
        return checks

    async def _database_ok(self) -> bool:
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S), self.db.read() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            if not self.db.outage.failed(exc):
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

    # --- what the use cases share ---

    def key(self, tenant: str, session_id: str) -> SessionKey:
        validate_session_id(session_id, self.settings.max_session_id_length)
        return (tenant, session_id)

    def top_k(self, k: int | None) -> int:
        if k is not None and k < 1:
            raise BadRequest("k must be at least 1")
        return k or self.settings.answer_top_k

    async def state(self, key: SessionKey) -> MemoryState:
        """The session's memory, from the cache when its version (and creation time) still match.
        The row alone is looked up first (one statement, no transaction: the common case); a miss
        reads row and items again in one transaction, so they come from the same snapshot."""
        async with self.db.lookup() as session:
            cached = self.states.cached(key, await session_row(session, key))
        if cached is not None:
            return cached
        async with self.db.read() as session:
            row = await session_row(session, key)
            return await self.states.get(session, key, row)

    def tokens(self, state: MemoryState) -> MemoryTokens:
        core = self.counter.count(state.core)
        semantic = sum(self.counter.count(item.content) for item in state.semantic)
        episodic = sum(self.counter.count(item.content) for item in state.episodic)
        cues = sum(self.counter.count(i.cues) for kind in LIST_KINDS for i in state.items(kind) if i.cues)
        total = core + semantic + episodic
        return MemoryTokens(core=core, semantic=semantic, episodic=episodic, total=total, cues=cues)
