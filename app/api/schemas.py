"""Request and response bodies of the HTTP API (ARCHITECTURE §6); they make the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from app.api.errors import TEXT_ERROR


def _storable(value: Any) -> Any:
    """JSON escapes can smuggle in lone surrogates (not UTF-8) and NUL (Postgres text rejects it):
    refuse them at the edge, so that a bad chunk is a 400 and never a failed write."""
    if isinstance(value, str):
        if "\x00" in value:
            raise PydanticCustomError(TEXT_ERROR, "text contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise PydanticCustomError(TEXT_ERROR, "text is not valid UTF-8 (lone surrogate)") from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    elif isinstance(value, list):
        for item in value:
            _storable(item)
    return value


Text = Annotated[str, AfterValidator(_storable)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]

ChunkStatus = Literal["pending", "processing", "done", "failed"]


# --- ingestion ---

class ChunkBody(BaseModel):
    content: Text
    timestamp: datetime | None = None
    idempotency_key: Annotated[Text, Field(max_length=255)] | None = None
    metadata: JsonObject | None = None


class IngestRequest(BaseModel):
    chunks: list[Text | ChunkBody] = Field(min_length=1, description="strings or chunk objects, in order")
    wait: bool = Field(default=True, description="wait until processed (200) or return at once (202)")


class OperationOut(BaseModel):
    tool: str
    memory_type: str
    memory_id: str | None
    status: str = Field(description="ok | skipped | error")
    content: str | None = Field(description="what the operation wrote; for a delete, what it removed")
    error: str | None


class ChunkResult(BaseModel):
    seq: int
    status: ChunkStatus
    operations: list[OperationOut]
    error: str | None
    duplicate: bool = Field(description="an idempotent replay of an already accepted chunk")


class IngestResponse(BaseModel):
    session_id: str
    chunks: list[ChunkResult]
    complete: bool = Field(description="every chunk done or failed (HTTP 200); else 202")


# --- memory ---

class MemoryItem(BaseModel):
    id: str
    content: str
    created_at: datetime
    updated_at: datetime
    source_seq: int | None = Field(description="the chunk that wrote it; null for manual edits")
    occurred_at: datetime | None = None


class MemoryTokens(BaseModel):
    core: int
    semantic: int
    episodic: int
    total: int


class MemoryOut(BaseModel):
    core: str
    core_truncated: bool
    semantic: list[MemoryItem]
    episodic: list[MemoryItem]
    version: int
    tokens: MemoryTokens


class CoreEdit(BaseModel):
    content: Text = Field(description="the new core paragraph")


class ItemEdit(BaseModel):
    content: Text


# --- answers and search ---

class ScoredEvidence(BaseModel):
    id: str
    content: str
    score: float


class Evidence(BaseModel):
    core: str
    semantic: list[ScoredEvidence]
    episodic: list[ScoredEvidence]


class AnswerOut(BaseModel):
    question: str
    answer: str
    evidence: Evidence
    memory_version: int
    model: str | None
    usage: dict[str, Any] | None = None
    k: int = Field(description="items retrieved per kind (after fitting the context budget)")
    latency_s: float


class ScoredItem(MemoryItem):
    score: float


class SearchOut(BaseModel):
    query: str
    memory_version: int
    semantic: list[ScoredItem] = Field(default_factory=list, description="absent kinds were not searched")
    episodic: list[ScoredItem] = Field(default_factory=list)


# --- sessions, logs, export ---

class SessionOut(BaseModel):
    id: str
    created_at: datetime
    updated_at: datetime
    version: int
    next_seq: int
    chunks: dict[ChunkStatus, int] = Field(description="chunk counts by status")
    items: dict[str, int] = Field(description="item counts by kind")
    blocked_by_seq: int | None = Field(description="a failed chunk that holds back the later ones")
    core_truncated: bool
    memory_tokens: int | None = Field(default=None, description="only on the single-session status")


class SessionList(BaseModel):
    sessions: list[SessionOut]
    limit: int
    offset: int


class ChunkRecord(BaseModel):
    seq: int
    status: ChunkStatus
    content: str
    timestamp: datetime | None
    idempotency_key: str | None
    part: int = Field(description="index of this piece when an over-long input was split")
    metadata: dict[str, Any] | None
    attempts: int
    error: str | None
    usage: dict[str, Any] | None
    policy: str | None
    model: str | None
    accepted_at: datetime
    started_at: datetime | None
    done_at: datetime | None
    next_attempt_at: datetime | None


class ChunkList(BaseModel):
    chunks: list[ChunkRecord]


class OperationRecord(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="policy | user | import")
    policy: str | None
    model: str | None
    chunk_seq: int | None
    tool: str
    memory_type: str
    memory_id: str | None
    status: str
    before: str | None
    after: str | None
    error: str | None
    truncated: bool


class OperationList(BaseModel):
    operations: list[OperationRecord]


class ExportedMemory(BaseModel):
    core: str
    core_truncated: bool
    version: int
    next_item: int = Field(description="the item-id counter, so that ids are never handed out twice")
    semantic: list[MemoryItem]
    episodic: list[MemoryItem]


class ExportOut(BaseModel):
    format: str
    session_id: str
    exported_at: datetime
    memory: ExportedMemory
    chunks: list[ChunkRecord] | None = Field(default=None, description="with include_chunks=true")


class ImportResult(BaseModel):
    session_id: str
    version: int
    imported: dict[str, int | bool]


# --- policy and health ---

class PolicyOut(BaseModel):
    name: str
    base_model: str
    adapter_path: str | None
    metrics: dict[str, Any] | None
    manifest: dict[str, Any] | None
    active: bool
    created_at: datetime
    backend: str = Field(description="extractive | openai")


class PolicySwitch(BaseModel):
    name: Text = Field(min_length=1, description="a registered policy version")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    database: bool
    policy: bool


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
