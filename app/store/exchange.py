"""Portable JSON of a session: its memory and, optionally, its chunk log (`export` / `import`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.errors import BadRequest
from app.memory import LIST_KINDS, Item, MemoryKind, MemoryLimits, MemoryState, OpResult, TokenCounter, Tool
from app.store.chunks import chunk_dict
from app.store.memory import item_dict
from app.store.models import ID_LENGTH, Chunk
from app.store.types import as_utc, utcnow

FORMAT = "memalpha.session.v1"


def _storable(value: str) -> str:
    # Postgres text cannot hold NUL; lone surrogates are not UTF-8.
    if "\x00" in value:
        raise ValueError("text contains a NUL character")
    value.encode("utf-8")
    return value


Text = Annotated[str, AfterValidator(_storable)]


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Annotated[Text, Field(min_length=1, max_length=32)]
    content: Annotated[Text, Field(min_length=1)]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    source_seq: int | None = None
    occurred_at: datetime | None = None


class MemoryIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    core: Text = ""
    core_truncated: bool = False
    version: int = Field(default=0, ge=0)
    next_item: int = Field(default=0, ge=0)
    semantic: list[ItemIn] = []
    episodic: list[ItemIn] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> MemoryIn:
        ids = [item.id for item in (*self.semantic, *self.episodic)]
        if len(ids) != len(set(ids)):
            raise ValueError("item ids must be unique across semantic and episodic memory")
        return self


class ChunkRecordIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    seq: int = Field(ge=1)
    content: Annotated[Text, Field(min_length=1)]
    status: Literal["pending", "processing", "done", "failed"] = "done"
    timestamp: datetime | None = None
    idempotency_key: Annotated[Text, Field(min_length=1, max_length=ID_LENGTH)] | None = None
    part: int = Field(default=0, ge=0)
    metadata: dict[str, Any] | None = None
    attempts: int = Field(default=0, ge=0)
    error: Text | None = None
    usage: dict[str, Any] | None = None
    policy: Annotated[Text, Field(max_length=ID_LENGTH)] | None = None
    model: Annotated[Text, Field(max_length=ID_LENGTH)] | None = None
    accepted_at: datetime | None = None
    started_at: datetime | None = None
    done_at: datetime | None = None


class SessionImport(BaseModel):
    model_config = ConfigDict(extra="ignore")
    format: Literal["memalpha.session.v1"]
    memory: MemoryIn
    chunks: list[ChunkRecordIn] | None = None

    @model_validator(mode="after")
    def _unique_chunks(self) -> SessionImport:
        chunks = self.chunks or []
        if len({c.seq for c in chunks}) != len(chunks):
            raise ValueError("chunk seqs must be unique")
        keyed = [(c.idempotency_key, c.part) for c in chunks if c.idempotency_key is not None]
        if len(set(keyed)) != len(keyed):
            raise ValueError("(idempotency_key, part) pairs must be unique")
        return self


def parse_import(payload: dict[str, Any], limits: MemoryLimits, counter: TokenCounter) -> SessionImport:
    """Validate an import payload completely before anything is written."""
    try:
        parsed = SessionImport.model_validate(payload)
    except ValidationError as exc:
        raise BadRequest(
            "invalid session import", details=exc.errors(include_url=False, include_context=False)
        ) from exc
    except UnicodeEncodeError as exc:
        raise BadRequest("invalid session import: text is not valid UTF-8") from exc
    memory = parsed.memory
    if counter.count(memory.core) > limits.core_tokens:
        raise BadRequest(f"core memory is longer than {limits.core_tokens} tokens")
    for kind in LIST_KINDS:
        items: list[ItemIn] = getattr(memory, kind.value)
        if len(items) > limits.max_items_per_kind:
            raise BadRequest(f"{kind.value} memory has more than {limits.max_items_per_kind} items")
        for item in items:
            if counter.count(item.content) > limits.max_item_tokens:
                raise BadRequest(
                    f"{kind.value} item {item.id} is longer than {limits.max_item_tokens} tokens"
                )
    return parsed


def to_state(memory: MemoryIn) -> tuple[MemoryState, list[OpResult]]:
    """The imported memory and the audit entries that record it (actor `import`)."""
    now = utcnow()
    state = MemoryState(core=memory.core, core_truncated=memory.core_truncated)
    results: list[OpResult] = []
    if memory.core:
        results.append(OpResult(Tool.UPDATE, MemoryKind.CORE.value, "ok", before="", after=memory.core))
    for kind in LIST_KINDS:
        for item in getattr(memory, kind.value):
            created = as_utc(item.created_at) or now
            state.items(kind).append(
                Item(
                    id=item.id,
                    content=item.content,
                    created_at=created,
                    updated_at=as_utc(item.updated_at) or created,
                    source_seq=item.source_seq,
                    occurred_at=as_utc(item.occurred_at),
                )
            )
            results.append(OpResult(Tool.INSERT, kind.value, "ok", item_id=item.id, after=item.content))
    count = len(state.semantic) + len(state.episodic)
    # The id counter must not hand out an imported id again; our own exports carry it.
    state.next_item = max(memory.next_item, count)
    state.version = max(memory.version, 1 if results else 0)
    return state, results


def chunk_rows(tenant_id: str, session_id: str, records: list[ChunkRecordIn]) -> list[dict[str, Any]]:
    now = utcnow()
    rows = []
    for record in records:
        # A chunk that was mid-processing in the source goes back to pending: its effects are not in
        # the exported memory, so it must run again here.
        status = "pending" if record.status == "processing" else record.status
        rows.append(
            {
                "tenant_id": tenant_id,
                "session_id": session_id,
                "seq": record.seq,
                "content": record.content,
                "timestamp": as_utc(record.timestamp),
                "idempotency_key": record.idempotency_key,
                "part": record.part,
                "metadata": record.metadata,
                "status": status,
                "attempts": 0 if status == "pending" else record.attempts,
                "error": record.error,
                "usage": record.usage,
                "policy": record.policy,
                "model": record.model,
                "accepted_at": as_utc(record.accepted_at) or now,
                "started_at": as_utc(record.started_at),
                "done_at": as_utc(record.done_at) if status in ("done", "failed") else None,
                "next_attempt_at": now if status == "pending" else None,
            }
        )
    return rows


def export_payload(session_id: str, state: MemoryState, chunks: list[Chunk] | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "format": FORMAT,
        "session_id": session_id,
        "exported_at": utcnow().isoformat(),
        "memory": {
            "core": state.core,
            "core_truncated": state.core_truncated,
            "version": state.version,
            "next_item": state.next_item,
            **{kind.value: [item_dict(item) for item in state.items(kind)] for kind in LIST_KINDS},
        },
    }
    if chunks is not None:
        payload["chunks"] = [chunk_dict(row) for row in chunks]
    return payload
