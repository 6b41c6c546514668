"""Request and response bodies of the HTTP API (ARCHITECTURE §6); they make the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from app.contracts.bounds import BigCount, Timestamp, not_text
from app.contracts.policy import PolicyServing

# The error type of our own text validators: malformed input, which the API answers 400 (not 422).
TEXT_ERROR = "invalid_text"


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
# Described as non-empty with something visible; the service refuses blank text with a 400 of its own
# (so the schema says what is accepted without turning that 400 into a 422).
VISIBLE = r"[^\s\x00-\x1f\x7f-\x9f]"  # at least one visible character (JSON Schema patterns search)
Content = Annotated[Text, Field(json_schema_extra={"minLength": 1, "pattern": VISIBLE})]
JsonObject = Annotated[dict[str, Any], AfterValidator(_storable)]


class RequestBody(BaseModel):
    """Request bodies refuse unknown fields (a misspelt `idempotency_key` or `wait` would otherwise be
    dropped silently: retries not deduplicated, callers blocked) and values of another JSON type (`"wait":
    0` is not a boolean)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Result(BaseModel):
    """What the service returns: the use cases build these and the API, the MCP tools and the client
    pass them on as they are (the one definition of each response shape). Immutable once built."""

    model_config = ConfigDict(frozen=True)


ChunkStatus = Literal["pending", "processing", "done", "failed"]
# The kinds that hold items (the core is one paragraph with routes of its own).
ItemKind = Literal["semantic", "episodic"]


# --- ingestion ---


class ChunkBody(RequestBody):
    content: Content
    timestamp: Timestamp | None = None
    idempotency_key: Annotated[Text, Field(min_length=1, max_length=255)] | None = None
    metadata: JsonObject | None = None


class IngestRequest(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"chunks": ["Alice: I moved to Lisbon last spring."], "wait": True},
                {
                    "chunks": [
                        {
                            "content": "Bob: my sister Carol is a nurse.",
                            "timestamp": "2023-05-08T13:56:00Z",
                            "idempotency_key": "msg-0042",
                        }
                    ],
                    "wait": False,
                },
            ]
        }
    )

    chunks: list[Content | ChunkBody] = Field(min_length=1, description="strings or chunk objects, in order")
    wait: bool = Field(default=True, description="wait until processed (200) or return at once (202)")


class OperationOut(Result):
    tool: str
    memory_type: str
    memory_id: str | None
    status: str = Field(description="ok | skipped | error")
    content: str | None = Field(description="what the operation wrote; for a delete, what it removed")
    error: str | None


class ChunkResult(Result):
    seq: int
    status: ChunkStatus
    operations: list[OperationOut]
    error: str | None
    duplicate: bool = Field(description="an idempotent replay of an already accepted chunk")


class IngestResponse(Result):
    session_id: str
    chunks: list[ChunkResult]
    complete: bool = Field(description="every chunk done or failed (HTTP 200); else 202")


# --- memory ---


class MemoryItem(Result):
    id: str
    content: str
    created_at: datetime
    updated_at: datetime
    source_seq: int | None = Field(description="the chunk that wrote it; null for manual edits")
    occurred_at: datetime | None = None
    cues: str = Field(
        default="",
        description="index-only words: a budget-mode search matches the item by them too, the answer "
        "context never shows them (the words of the question its source turn answered; read-only here)",
    )


class MemoryTokens(Result):
    """Tokens of what the memory shows (core and item contents); items' index-only cues are counted
    apart, in `cues`, and not in `total`."""

    core: int
    semantic: int
    episodic: int
    total: int = Field(description="core + semantic + episodic (contents only, without cues)")
    cues: int = Field(default=0, description="tokens of the items' index-only cues (not in total)")


class MemoryOut(Result):
    core: str
    core_truncated: bool
    semantic: list[MemoryItem]
    episodic: list[MemoryItem]
    version: int
    tokens: MemoryTokens


class CoreEdit(RequestBody):
    content: Content = Field(
        description="the new core paragraph", examples=["Alice, marine biologist, lives in Lisbon."]
    )


class ItemEdit(RequestBody):
    content: Content = Field(examples=["Alice likes green tea."])


class Question(RequestBody):
    """A question in a body, for questions too long for a URL."""

    q: Content
    k: Annotated[int, Field(strict=False, ge=1, le=1000), BeforeValidator(not_text)] | None = None


class SearchQuery(Question):
    memory_type: ItemKind | None = Field(default=None, description="both kinds when absent")


# --- answers and search ---


class ScoredEvidence(Result):
    id: str
    content: str
    score: float


class Evidence(Result):
    core: str
    semantic: list[ScoredEvidence]
    episodic: list[ScoredEvidence]


class AnswerOut(Result):
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


class SearchOut(Result):
    query: str
    memory_version: int
    semantic: list[ScoredItem] = Field(default_factory=list, description="absent kinds were not searched")
    episodic: list[ScoredItem] = Field(default_factory=list)


# --- sessions, logs, export ---


class SessionOut(Result):
    id: str
    created_at: datetime
    updated_at: datetime
    version: int
    next_seq: int
    chunks: dict[ChunkStatus, int] = Field(description="chunk counts by status")
    items: dict[str, int] = Field(description="item counts by kind")
    blocked_by_seq: int | None = Field(description="a failed chunk that holds back the later ones")
    core_truncated: bool
    memory_tokens: int = Field(
        description="core + semantic + episodic tokens of the memory (item contents; index-only cues not included)"
    )


class SessionList(Result):
    sessions: list[SessionOut]
    limit: int
    offset: BigCount


class ChunkRecord(Result):
    seq: int
    status: ChunkStatus
    content: str
    timestamp: datetime | None
    idempotency_key: str | None
    request_id: str | None = Field(description="X-Request-ID of the ingest request that accepted it")
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


class ChunkList(Result):
    chunks: list[ChunkRecord]


class OperationRecord(Result):
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


class OperationList(Result):
    operations: list[OperationRecord]


class ExportedMemory(Result):
    core: str
    core_truncated: bool
    version: int
    next_item: int = Field(description="the item-id counter, so that ids are never handed out twice")
    semantic: list[MemoryItem]
    episodic: list[MemoryItem]


class ExportOut(Result):
    format: str
    session_id: str
    exported_at: datetime
    memory: ExportedMemory
    chunks: list[ChunkRecord] | None = Field(default=None, description="with include_chunks=true")
    operations: list[OperationRecord] | None = Field(default=None, description="with include_operations=true")


class ImportResult(Result):
    session_id: str
    version: int
    imported: dict[str, int | bool]


# --- policy and health ---


class PolicyOut(Result):
    name: str
    base_model: str
    adapter_path: str | None
    metrics: dict[str, Any] | None
    manifest: dict[str, Any] | None
    active: bool
    created_at: datetime
    backend: str = Field(description="extractive | openai")
    serving: PolicyServing = Field(
        description="settings that shape the prompt and decoding; an adapter must be trained under the same"
    )


class PolicyRegistration(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "qwen-json",
                    "base_model": "qwen2.5-coder-0.5b",
                    "manifest": {
                        "backend": "openai",
                        "base_url": "http://127.0.0.1:8011/v1",
                        "model": "qwen2.5-coder-0.5b",
                        "tool_format": "json",
                    },
                }
            ]
        }
    )

    name: Text = Field(min_length=1, max_length=200, description="a new name: names are never reused")
    base_model: Text = Field(min_length=1)
    adapter_path: Text | None = None
    metrics: JsonObject = Field(default_factory=dict)
    manifest: JsonObject = Field(
        default_factory=dict,
        description='optional own backend for replays: {"backend": "extractive"} or {"backend": "openai", '
        '"base_url", "model", "tool_format"}; without one the service\'s backend serves the name',
    )


class CanaryReport(RequestBody):
    """What the publish canary measured (trainer/canary.py) before the switch it is sent with."""

    replica: Text = Field(description="the policy server the canary ran against")
    chunks: int = Field(ge=1, description="held-out chunks run through the serving prompt path")
    parse_error_rate: float = Field(ge=0, le=1, description="share of chunks whose reply had a parse error")
    r2: float = Field(ge=0, le=1, description="applied calls / parsed calls, mean over the chunks (SPEC §6)")
    expected: dict[Literal["parse_error_rate", "r2"], float] = Field(
        description="the manifest's evaluation it was compared with"
    )
    margin: float = Field(ge=0, description="how much worse than the manifest's either measure may be")
    policy_errors: list[Text] = Field(default_factory=list, description="policy calls that failed")
    failures: list[Text] = Field(default_factory=list, description="why it failed; empty: passed")
    passed: bool
    forced: bool = Field(description="the switch was asked for whatever the canary measured (--force)")


class PolicySwitch(RequestBody):
    name: Text = Field(min_length=1, description="a registered policy version", examples=["memalpha-4b-v2"])
    canary: CanaryReport | None = Field(
        default=None, description="the publish canary's result, stored with the switch (publish sends it)"
    )


class Me(Result):
    tenant_id: str
    admin: bool = Field(description="admin keys may switch policies, retry chunks from the inspector, replay")


class Health(Result):
    status: Literal["ok"]


class Readiness(Result):
    status: Literal["ready"]
    database: bool
    policy: bool | None = Field(description="the policy server answers; null unless asked with full=1")


class PolicyActivation(Result):
    action: Literal["switch", "rollback"]
    from_name: str | None
    to_name: str
    actor: str = Field(description="tenant of the admin key that switched")
    at: datetime
    canary: CanaryReport | None = Field(description="the publish canary's result; null: none was sent")


class PolicyActivations(Result):
    activations: list[PolicyActivation]


class ErrorBody(Result):
    code: str
    message: str
    details: Any | None = None
    request_id: str | None = None  # the response's X-Request-ID, also in the service's log lines


class ErrorOut(Result):
    error: ErrorBody
