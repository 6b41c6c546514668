"""`MemoryClient`: the HTTP API from blocking code (scripts, notebooks, the CLI).

The same surface as `aio.AsyncMemoryClient` without the awaits (tests/test_client.py holds the two to
one signature list); both only send the calls that `calls.py` builds."""

from __future__ import annotations

import time
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


class MemoryClient:
    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(**client_options(base_url, api_key, timeout), transport=transport)  # type: ignore[arg-type]
        self.retry = retry

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call[Model]) -> Model:
        retry = 0
        while True:
            try:
                response = self._http.send(call.request(self._http))
            except httpx.HTTPError as exc:
                raise MemalphaError(f"{call.method} {call.path}: {exc!r}") from exc
            wait = self.retry.wait_s(response, retry)
            if wait is None:
                return call.parse(response)
            retry += 1
            time.sleep(wait)

    # --- ingestion and sessions ---

    def ingest(self, session_id: str, chunks: Sequence[ChunkLike], *, wait: bool = True) -> IngestResponse:
        """Append chunks (strings, or `ChunkBody` with timestamp / idempotency key / metadata). `wait=False`
        returns at once with the chunks pending (HTTP 202); `complete` says whether all were processed."""
        return self._run(calls.ingest(session_id, chunks, wait=wait))

    def settle(self, session_id: str, *, timeout: float = 300.0, poll_s: float = 0.5) -> SessionOut:
        """Poll until no chunk of the session is pending or processing (or a failed one blocks the rest)."""
        deadline = time.monotonic() + timeout
        while calls.unfinished(session := self.get_session(session_id)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {session_id!r} still has unprocessed chunks after {timeout} s")
            time.sleep(poll_s)
        return session

    def list_sessions(self, *, limit: int = 100, offset: int = 0) -> SessionList:
        return self._run(calls.list_sessions(limit=limit, offset=offset))

    def get_session(self, session_id: str) -> SessionOut:
        return self._run(calls.get_session(session_id))

    def delete_session(self, session_id: str) -> None:
        self._run(calls.delete_session(session_id))

    def list_chunks(
        self, session_id: str, *, status: ChunkStatus | None = None, after_seq: int = 0, limit: int = 100
    ) -> ChunkList:
        return self._run(calls.list_chunks(session_id, status=status, after_seq=after_seq, limit=limit))

    def retry_chunk(self, session_id: str, seq: int) -> ChunkResult:
        return self._run(calls.retry_chunk(session_id, seq))

    def list_operations(self, session_id: str, *, after_id: int = 0, limit: int = 100) -> OperationList:
        return self._run(calls.list_operations(session_id, after_id=after_id, limit=limit))

    def export_session(self, session_id: str, *, include_chunks: bool = False) -> ExportOut:
        return self._run(calls.export_session(session_id, include_chunks=include_chunks))

    def import_session(self, session_id: str, payload: ExportOut | Mapping[str, Any]) -> ImportResult:
        return self._run(calls.import_session(session_id, payload))

    # --- memory ---

    def get_memory(self, session_id: str) -> MemoryOut:
        return self._run(calls.get_memory(session_id))

    def replace_core(self, session_id: str, content: str) -> OperationOut:
        return self._run(calls.replace_core(session_id, content))

    def clear_core(self, session_id: str) -> OperationOut:
        return self._run(calls.clear_core(session_id))

    def insert_item(self, session_id: str, memory_type: ItemKind, content: str) -> OperationOut:
        return self._run(calls.insert_item(session_id, memory_type, content))

    def update_item(
        self, session_id: str, memory_type: ItemKind, memory_id: str, content: str
    ) -> OperationOut:
        return self._run(calls.update_item(session_id, memory_type, memory_id, content))

    def delete_item(self, session_id: str, memory_type: ItemKind, memory_id: str) -> OperationOut:
        return self._run(calls.delete_item(session_id, memory_type, memory_id))

    def answer(self, session_id: str, question: str, *, k: int | None = None) -> AnswerOut:
        return self._run(calls.answer(session_id, question, k=k))

    def search(
        self, session_id: str, query: str, *, k: int | None = None, memory_type: ItemKind | None = None
    ) -> SearchOut:
        return self._run(calls.search(session_id, query, k=k, memory_type=memory_type))

    # --- operations ---

    def get_policy(self) -> PolicyOut:
        return self._run(calls.get_policy())

    def set_policy(self, name: str, canary: CanaryReport | None = None) -> PolicyOut:
        """Switch the active policy to a registered version (admin key), recording the publish canary's
        result with the switch when given."""
        return self._run(calls.set_policy(name, canary))

    def rollback_policy(self) -> PolicyOut:
        """Switch back to the policy active before the latest switch to the current one (admin key)."""
        return self._run(calls.rollback_policy())

    def policy_activations(self) -> PolicyActivations:
        """The latest switches of the active policy, newest first (admin key)."""
        return self._run(calls.policy_activations())

    def register_policy(self, registration: PolicyRegistration) -> PolicyOut:
        """Register a policy version (admin key); it stays inactive until `set_policy`."""
        return self._run(calls.register_policy(registration))

    def start_replay(self, session_id: str, request: ReplayRequest) -> ReplayStatus:
        """Start replaying the session's chunk log under `request.policy` (admin key); returns at once."""
        return self._run(calls.start_replay(session_id, request))

    def get_replay(self, session_id: str, replay_id: str) -> ReplayStatus:
        return self._run(calls.get_replay(session_id, replay_id))

    def list_replays(self, session_id: str) -> ReplayList:
        return self._run(calls.list_replays(session_id))

    def replay(
        self, session_id: str, request: ReplayRequest, *, timeout: float = 3600.0, poll_s: float = 1.0
    ) -> ReplayStatus:
        """Start a replay and poll until it is done or failed."""
        started = self.start_replay(session_id, request)
        deadline = time.monotonic() + timeout
        while not (status := self.get_replay(session_id, started.id)).finished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"replay {started.id} still running after {timeout} s")
            time.sleep(poll_s)
        return status

    def me(self) -> Me:
        """The tenant and role of this client's key."""
        return self._run(calls.me())

    def health(self) -> Health:
        return self._run(calls.health())

    def ready(self) -> Readiness:
        return self._run(calls.ready())
