"""`AsyncMemoryClient`: the HTTP API from asyncio code (agents, the MCP server's stdio bridge, the trainer)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from app.client import calls
from app.client._base import DEFAULT_RETRY, DEFAULT_URL, client_options
from app.client.calls import Call, ChunkLike, Model, RetryPolicy
from app.client.errors import MemalphaError
from app.contracts.schemas import (
    AnswerOut,
    CanaryReport,
    ChunkList,
    ChunkResult,
    ChunkStatus,
    ExportOut,
    Health,
    ImportResult,
    IngestResponse,
    ItemKind,
    Me,
    MemoryOut,
    OperationList,
    OperationOut,
    PolicyActivations,
    PolicyOut,
    PolicyRegistration,
    Readiness,
    SearchOut,
    SessionList,
    SessionOut,
)
from app.replay.models import ReplayList, ReplayRequest, ReplayStatus


class AsyncMemoryClient:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(**client_options(base_url, api_key, timeout), transport=transport)  # type: ignore[arg-type]
        self.retry = retry

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call[Model]) -> Model:
        retry = 0
        while True:
            try:
                response = await self._http.send(call.request(self._http))
            except httpx.HTTPError as exc:
                raise MemalphaError(f"{call.method} {call.path}: {exc!r}") from exc
            wait = self.retry.wait_s(response, retry)
            if wait is None:
                return call.parse(response)
            retry += 1
            await asyncio.sleep(wait)

    # --- ingestion and sessions ---

    async def ingest(
        self, session_id: str, chunks: Sequence[ChunkLike], *, wait: bool = True
    ) -> IngestResponse:
        """Append chunks (strings, or `ChunkBody` with timestamp / idempotency key / metadata). `wait=False`
        returns at once with the chunks pending (HTTP 202); `complete` says whether all were processed."""
        return await self._run(calls.ingest(session_id, chunks, wait=wait))

    async def settle(self, session_id: str, *, timeout: float = 300.0, poll_s: float = 0.5) -> SessionOut:
        """Poll until no chunk of the session is pending or processing (or a failed one blocks the rest)."""
        async with asyncio.timeout(timeout):
            while calls.unfinished(session := await self.get_session(session_id)):
                await asyncio.sleep(poll_s)
        return session

    async def list_sessions(self, *, limit: int = 100, offset: int = 0) -> SessionList:
        return await self._run(calls.list_sessions(limit=limit, offset=offset))

    async def get_session(self, session_id: str) -> SessionOut:
        return await self._run(calls.get_session(session_id))

    async def delete_session(self, session_id: str) -> None:
        await self._run(calls.delete_session(session_id))

    async def list_chunks(
        self, session_id: str, *, status: ChunkStatus | None = None, after_seq: int = 0, limit: int = 100
    ) -> ChunkList:
        return await self._run(calls.list_chunks(session_id, status=status, after_seq=after_seq, limit=limit))

    async def retry_chunk(self, session_id: str, seq: int) -> ChunkResult:
        return await self._run(calls.retry_chunk(session_id, seq))

    async def list_operations(self, session_id: str, *, after_id: int = 0, limit: int = 100) -> OperationList:
        return await self._run(calls.list_operations(session_id, after_id=after_id, limit=limit))

    async def export_session(self, session_id: str, *, include_chunks: bool = False) -> ExportOut:
        return await self._run(calls.export_session(session_id, include_chunks=include_chunks))

    async def import_session(self, session_id: str, payload: ExportOut | Mapping[str, Any]) -> ImportResult:
        return await self._run(calls.import_session(session_id, payload))

    # --- memory ---

    async def get_memory(self, session_id: str) -> MemoryOut:
        return await self._run(calls.get_memory(session_id))

    async def replace_core(self, session_id: str, content: str) -> OperationOut:
        return await self._run(calls.replace_core(session_id, content))

    async def clear_core(self, session_id: str) -> OperationOut:
        return await self._run(calls.clear_core(session_id))

    async def insert_item(self, session_id: str, memory_type: ItemKind, content: str) -> OperationOut:
        return await self._run(calls.insert_item(session_id, memory_type, content))

    async def update_item(
        self, session_id: str, memory_type: ItemKind, memory_id: str, content: str
    ) -> OperationOut:
        return await self._run(calls.update_item(session_id, memory_type, memory_id, content))

    async def delete_item(self, session_id: str, memory_type: ItemKind, memory_id: str) -> OperationOut:
        return await self._run(calls.delete_item(session_id, memory_type, memory_id))

    async def answer(self, session_id: str, question: str, *, k: int | None = None) -> AnswerOut:
        return await self._run(calls.answer(session_id, question, k=k))

    async def search(
        self, session_id: str, query: str, *, k: int | None = None, memory_type: ItemKind | None = None
    ) -> SearchOut:
        return await self._run(calls.search(session_id, query, k=k, memory_type=memory_type))

    # --- operations ---

    async def get_policy(self) -> PolicyOut:
        return await self._run(calls.get_policy())

    async def set_policy(self, name: str, canary: CanaryReport | None = None) -> PolicyOut:
        """Switch the active policy to a registered version (admin key), recording the publish canary's
        result with the switch when given."""
        return await self._run(calls.set_policy(name, canary))

    async def rollback_policy(self) -> PolicyOut:
        """Switch back to the policy active before the latest switch to the current one (admin key)."""
        return await self._run(calls.rollback_policy())

    async def policy_activations(self) -> PolicyActivations:
        """The latest switches of the active policy, newest first (admin key)."""
        return await self._run(calls.policy_activations())

    async def register_policy(self, registration: PolicyRegistration) -> PolicyOut:
        """Register a policy version (admin key); it stays inactive until `set_policy`."""
        return await self._run(calls.register_policy(registration))

    async def start_replay(self, session_id: str, request: ReplayRequest) -> ReplayStatus:
        """Start replaying the session's chunk log under `request.policy` (admin key); returns at once."""
        return await self._run(calls.start_replay(session_id, request))

    async def get_replay(self, session_id: str, replay_id: str) -> ReplayStatus:
        return await self._run(calls.get_replay(session_id, replay_id))

    async def list_replays(self, session_id: str) -> ReplayList:
        return await self._run(calls.list_replays(session_id))

    async def replay(
        self, session_id: str, request: ReplayRequest, *, timeout: float = 3600.0, poll_s: float = 1.0
    ) -> ReplayStatus:
        """Start a replay and poll until it is done or failed."""
        started = await self.start_replay(session_id, request)
        async with asyncio.timeout(timeout):
            while not (status := await self.get_replay(session_id, started.id)).finished:
                await asyncio.sleep(poll_s)
        return status

    async def me(self) -> Me:
        """The tenant and role of this client's key."""
        return await self._run(calls.me())

    async def health(self) -> Health:
        return await self._run(calls.health())

    async def ready(self) -> Readiness:
        return await self._run(calls.ready())
