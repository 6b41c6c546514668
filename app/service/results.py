"""The use cases' results (the `app.contracts` response models) built from the domain's objects: an
operation's outcome from the result of applying it or from its audit-log row, memory items with and
without a search score."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

from app.contracts.schemas import MemoryItem, OperationOut, ScoredItem
from app.memory import Item, OpResult, Tool
from app.retrieval import ScoredItem as Hit
from app.store.audit import Logged


def _operation(
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
    return OperationOut(
        tool=str(tool),
        memory_type=memory_type,
        memory_id=memory_id,
        status=status,
        content=content,
        error=error,
    )


def applied(result: OpResult) -> OperationOut:
    return _operation(
        result.tool,
        result.memory_type,
        result.item_id,
        result.status,
        result.before,
        result.after,
        result.error,
    )


def logged(row: Logged) -> OperationOut:
    return _operation(row.tool, row.memory_type, row.item_id, row.status, row.before, row.after, row.error)


def items(found: Iterable[Item]) -> list[MemoryItem]:
    return [MemoryItem.model_validate(item, from_attributes=True) for item in found]


def scored(hits: Iterable[Hit]) -> list[ScoredItem]:
    return [ScoredItem.model_validate({**asdict(hit.item), "score": hit.score}) for hit in hits]
