"""Portable JSON of a session: its memory and, optionally, its chunk log and audit log (`export` /
`import`).

Imports cannot lose data: every field is validated against what the columns hold and unknown fields are
refused; the item-id counter moves past every imported id this service could mint (so a later insert
never reuses one, whatever `next_item` said); an exported audit log is restored as it was."""

from __future__ import annotations

from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from app.contracts.bounds import ID_MAX
from app.contracts.exchange import FORMAT, ChunkRecordIn, ItemIn, MemoryIn, OperationIn, SessionImport
from app.contracts.schemas import ExportedMemory, ExportOut
from app.errors import BadRequest, Conflict
from app.memory import (
    LIST_KINDS,
    Item,
    MemoryKind,
    MemoryLimits,
    MemoryState,
    OpResult,
    TokenCounter,
    Tool,
)
from app.memory.ids import counter_of
from app.store.audit import operation_record
from app.store.chunks import chunk_record
from app.store.models import Chunk, OperationLog
from app.store.sessions import SessionKey
from app.store.types import as_utc, utcnow


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
    _unique(parsed)
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
            if counter.count(item.cues) > limits.max_item_tokens:
                raise BadRequest(
                    f"{kind.value} item {item.id} has cues longer than {limits.max_item_tokens} tokens"
                )
    return parsed


def _unique(parsed: SessionImport) -> None:
    """Keys that must not repeat: a payload that contradicts itself is a conflict (409), which no JSON
    Schema can describe."""
    ids = [item.id for item in (*parsed.memory.semantic, *parsed.memory.episodic)]
    if len(ids) != len(set(ids)):
        raise Conflict("item ids must be unique across semantic and episodic memory")
    chunks = parsed.chunks or []
    if len({c.seq for c in chunks}) != len(chunks):
        raise Conflict("chunk seqs must be unique")
    keyed = [(c.idempotency_key, c.part) for c in chunks if c.idempotency_key is not None]
    if len(set(keyed)) != len(keyed):
        raise Conflict("(idempotency_key, part) pairs must be unique")


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
                    cues=" ".join(item.cues.split()),
                )
            )
            results.append(OpResult(Tool.INSERT, kind.value, "ok", item_id=item.id, after=item.content))
    # The id counter must not hand out an imported id again, also when the export is foreign or lacks
    # `next_item`: it moves past every imported id the counter could ever reach.
    reachable = (counter_of(item.id) for item in (*memory.semantic, *memory.episodic))
    past = [counter + 1 for counter in reachable if counter is not None and counter < ID_MAX]
    state.next_item = max(memory.next_item, len(state.semantic) + len(state.episodic), *past)
    state.version = max(memory.version, 1 if results else 0)
    return state, results


def chunk_rows(tenant_id: str, session_id: str, records: list[ChunkRecordIn]) -> list[dict[str, Any]]:
    now = utcnow()
    rows = []
    for record in records:
        # The import transition (statuses, attempts, times) is the queue's: `ChunkQueue.import_chunks`.
        rows.append(
            {
                "tenant_id": tenant_id,
                "session_id": session_id,
                "seq": record.seq,
                "content": record.content,
                "timestamp": as_utc(record.timestamp),
                "idempotency_key": record.idempotency_key,
                "request_id": record.request_id,
                "part": record.part,
                "metadata": record.metadata,
                "status": record.status,
                "attempts": record.attempts,
                "error": record.error,
                "usage": record.usage,
                "policy": record.policy,
                "model": record.model,
                "accepted_at": as_utc(record.accepted_at) or now,
                "started_at": as_utc(record.started_at),
                "done_at": as_utc(record.done_at),
            }
        )
    return rows


async def restore_operations(session: AsyncSession, key: SessionKey, operations: list[OperationIn]) -> None:
    """Write an exported audit log into the session's (new ids, same order)."""
    if operations:
        table = cast(Table, OperationLog.__table__)
        await session.execute(table.insert(), _operation_rows(key[0], key[1], operations))


def _operation_rows(tenant_id: str, session_id: str, operations: list[OperationIn]) -> list[dict[str, Any]]:
    """An exported audit log as rows of this database (new ids, same order)."""
    return [
        {
            "tenant_id": tenant_id,
            "session_id": session_id,
            "chunk_seq": op.chunk_seq,
            "actor": op.actor,
            "policy": op.policy,
            "model": op.model,
            "tool": op.tool,
            "memory_type": op.memory_type,
            "item_id": op.memory_id,
            "status": op.status,
            "before": op.before,
            "after": op.after,
            "error": op.error,
            "truncated": op.truncated,
            "created_at": op.at,
        }
        for op in operations
    ]


def export_payload(
    session_id: str,
    state: MemoryState,
    chunks: list[Chunk] | None,
    operations: list[OperationLog] | None = None,
) -> ExportOut:
    return ExportOut(
        format=FORMAT,
        session_id=session_id,
        exported_at=utcnow(),
        memory=ExportedMemory.model_validate(state, from_attributes=True),
        chunks=None if chunks is None else [chunk_record(row) for row in chunks],
        operations=None if operations is None else [operation_record(row) for row in operations],
    )
