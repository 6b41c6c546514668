"""Every API call once, as data: a `Call` names the method, path, query, body and the response model (the
API's own, from `app.contracts.schemas`). The sync and async clients only send calls; the retry rule is here too."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from app.client.errors import error_from_response
from app.contracts.schemas import (
    AnswerOut,
    CanaryReport,
    ChunkBody,
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

Model = TypeVar("Model", bound=BaseModel)
ChunkLike = str | ChunkBody

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Call(Generic[Model]):
    method: str
    path: str
    model: type[Model] | None  # None: the answer has no body (204)
    params: Mapping[str, Any] | None = None
    body: Any = None

    def request(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        return client.build_request(self.method, self.path, params=params, json=self.body)

    def parse(self, response: httpx.Response) -> Model:
        if response.is_error:
            raise error_from_response(response)
        if self.model is None:
            return cast(Model, None)  # a 204: the caller's method is typed `-> None`
        return self.model.model_validate_json(response.content)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries a call answered 429 or 503 (the service did nothing with it), waiting what `Retry-After`
    says (capped at `max_wait_s`) or else `backoff_s` doubling per retry."""

    max_retries: int = 3
    backoff_s: float = 0.5
    max_wait_s: float = 30.0

    def wait_s(self, response: httpx.Response, retry: int) -> float | None:
        """Seconds to wait before retry number `retry` (0-based); None: give up."""
        if response.status_code not in RETRY_STATUSES or retry >= self.max_retries:
            return None
        told = _retry_after(response.headers.get("retry-after"))
        return min(self.max_wait_s, self.backoff_s * 2**retry if told is None else told)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _session(session_id: str, *rest: str) -> str:
    return "/".join(["/sessions", quote(session_id, safe=""), *(quote(part, safe="") for part in rest)])


def _chunk(chunk: ChunkLike) -> Any:
    return chunk if isinstance(chunk, str) else chunk.model_dump(mode="json", exclude_none=True)


# --- sessions and ingestion ---


def ingest(session_id: str, chunks: Sequence[ChunkLike], *, wait: bool) -> Call[IngestResponse]:
    body = {"chunks": [_chunk(chunk) for chunk in chunks], "wait": wait}
    return Call("POST", _session(session_id, "ingest"), IngestResponse, body=body)


def list_sessions(*, limit: int, offset: int) -> Call[SessionList]:
    return Call("GET", "/sessions", SessionList, {"limit": limit, "offset": offset})


def get_session(session_id: str) -> Call[SessionOut]:
    return Call("GET", _session(session_id), SessionOut)


def delete_session(session_id: str) -> Call[BaseModel]:
    return Call("DELETE", _session(session_id), None)


def list_chunks(
    session_id: str, *, status: ChunkStatus | None, after_seq: int, limit: int
) -> Call[ChunkList]:
    params = {"status": status, "after_seq": after_seq, "limit": limit}
    return Call("GET", _session(session_id, "chunks"), ChunkList, params)


def retry_chunk(session_id: str, seq: int) -> Call[ChunkResult]:
    return Call("POST", _session(session_id, "chunks", str(seq), "retry"), ChunkResult)


def list_operations(session_id: str, *, after_id: int, limit: int) -> Call[OperationList]:
    params = {"after_id": after_id, "limit": limit}
    return Call("GET", _session(session_id, "operations"), OperationList, params)


def export_session(session_id: str, *, include_chunks: bool) -> Call[ExportOut]:
    params = {"include_chunks": str(include_chunks).lower()}
    return Call("GET", _session(session_id, "export"), ExportOut, params)


def import_session(session_id: str, payload: ExportOut | Mapping[str, Any]) -> Call[ImportResult]:
    body = payload.model_dump(mode="json") if isinstance(payload, ExportOut) else dict(payload)
    return Call("POST", _session(session_id, "import"), ImportResult, body=body)


# --- memory ---


def get_memory(session_id: str) -> Call[MemoryOut]:
    return Call("GET", _session(session_id, "memory"), MemoryOut)


def replace_core(session_id: str, content: str) -> Call[OperationOut]:
    return Call("PUT", _session(session_id, "memory", "core"), OperationOut, body={"content": content})


def clear_core(session_id: str) -> Call[OperationOut]:
    return Call("DELETE", _session(session_id, "memory", "core"), OperationOut)


def insert_item(session_id: str, memory_type: ItemKind, content: str) -> Call[OperationOut]:
    return Call("POST", _session(session_id, "memory", memory_type), OperationOut, body={"content": content})


def update_item(session_id: str, memory_type: ItemKind, memory_id: str, content: str) -> Call[OperationOut]:
    path = _session(session_id, "memory", memory_type, memory_id)
    return Call("PATCH", path, OperationOut, body={"content": content})


def delete_item(session_id: str, memory_type: ItemKind, memory_id: str) -> Call[OperationOut]:
    return Call("DELETE", _session(session_id, "memory", memory_type, memory_id), OperationOut)


def answer(session_id: str, question: str, *, k: int | None) -> Call[AnswerOut]:
    return Call("GET", _session(session_id, "answer"), AnswerOut, {"q": question, "k": k})


def search(session_id: str, query: str, *, k: int | None, memory_type: ItemKind | None) -> Call[SearchOut]:
    params = {"q": query, "k": k, "memory_type": memory_type}
    return Call("GET", _session(session_id, "search"), SearchOut, params)


# --- operations ---


def get_policy() -> Call[PolicyOut]:
    return Call("GET", "/policy", PolicyOut)


def set_policy(name: str, canary: CanaryReport | None = None) -> Call[PolicyOut]:
    body: dict[str, Any] = {"name": name}
    if canary is not None:
        body["canary"] = canary.model_dump(mode="json")
    return Call("PUT", "/policy", PolicyOut, body=body)


def rollback_policy() -> Call[PolicyOut]:
    return Call("POST", "/policy/rollback", PolicyOut)


def policy_activations() -> Call[PolicyActivations]:
    return Call("GET", "/policy/activations", PolicyActivations)


def register_policy(registration: PolicyRegistration) -> Call[PolicyOut]:
    return Call("POST", "/policies", PolicyOut, body=registration.model_dump(mode="json"))


def start_replay(session_id: str, request: ReplayRequest) -> Call[ReplayStatus]:
    return Call("POST", _session(session_id, "replay"), ReplayStatus, body=request.model_dump(mode="json"))


def get_replay(session_id: str, replay_id: str) -> Call[ReplayStatus]:
    return Call("GET", _session(session_id, "replays", replay_id), ReplayStatus)


def list_replays(session_id: str) -> Call[ReplayList]:
    return Call("GET", _session(session_id, "replays"), ReplayList)


def me() -> Call[Me]:
    return Call("GET", "/me", Me)


def health() -> Call[Health]:
    return Call("GET", "/healthz", Health)


def ready() -> Call[Readiness]:
    return Call("GET", "/readyz", Readiness)


def unfinished(session: SessionOut) -> bool:
    """Chunks still to process, unless a failed chunk blocks them (then waiting is pointless)."""
    waiting = session.chunks.get("pending", 0) + session.chunks.get("processing", 0)
    return waiting > 0 and session.blocked_by_seq is None
