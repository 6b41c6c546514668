"""Reading a session's memory and editing it by hand (the policy's apply rules, logged with actor `user`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.contracts.schemas import MemoryOut, OperationOut
from app.errors import BadRequest, NotFound
from app.ingest.worker import op_labels
from app.memory import MemoryKind, Operation, Tool
from app.memory.ids import normalise_id
from app.metrics import OPERATIONS
from app.service.reads import session_row
from app.service.results import applied, items
from app.store import audit
from app.store.memory import load_state, save_state
from app.store.types import utcnow

if TYPE_CHECKING:
    from app.service.runtime import MemoryService


class Memory:
    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def get_memory(self, tenant: str, session_id: str) -> MemoryOut:
        state = await self.service.state(self.service.key(tenant, session_id))
        return MemoryOut(
            core=state.core,
            core_truncated=state.core_truncated,
            semantic=items(state.semantic),
            episodic=items(state.episodic),
            version=state.version,
            tokens=self.service.tokens(state),
        )

    async def edit_memory(self, tenant: str, session_id: str, op: Operation) -> OperationOut:
        """A manual edit: the policy's apply rules, logged with actor `user`. Rejected edits change
        nothing and are not logged."""
        key = self.service.key(tenant, session_id)
        kind = MemoryKind.parse(op.memory_type)
        if kind is None:
            raise BadRequest(f"unknown memory type {op.memory_type!r}; use core, semantic or episodic")
        async with self.service.db.write() as session:
            row = await session_row(session, key, for_update=True)
            before = await load_state(session, row)
            after = before.copy()
            now = utcnow()
            result = self.service.applier.apply(after, op, now=now)
            if result.status == "error":
                wanted = normalise_id(op.memory_id)
                if kind is not MemoryKind.CORE and wanted is not None and before.find(kind, wanted) is None:
                    raise NotFound(result.error or "no such item")
                raise BadRequest(result.error or "invalid edit")
            await save_state(session, row, before, after)
            await audit.record(session, key, [result], actor="user", now=now)
            row.updated_at = now
        OPERATIONS.labels(*op_labels(result)).inc()
        return applied(result)

    async def replace_core(self, tenant: str, session_id: str, content: str) -> OperationOut:
        return await self.edit_memory(tenant, session_id, Operation(Tool.UPDATE, MemoryKind.CORE, content))

    async def clear_core(self, tenant: str, session_id: str) -> OperationOut:
        return await self.edit_memory(tenant, session_id, Operation(Tool.DELETE, MemoryKind.CORE))

    async def insert_item(self, tenant: str, session_id: str, memory_type: str, content: str) -> OperationOut:
        return await self.edit_memory(tenant, session_id, Operation(Tool.INSERT, memory_type, content))

    async def update_item(
        self, tenant: str, session_id: str, memory_type: str, memory_id: str, content: str
    ) -> OperationOut:
        op = Operation(Tool.UPDATE, memory_type, content=content, memory_id=memory_id)
        return await self.edit_memory(tenant, session_id, op)

    async def delete_item(
        self, tenant: str, session_id: str, memory_type: str, memory_id: str
    ) -> OperationOut:
        op = Operation(Tool.DELETE, memory_type, memory_id=memory_id)
        return await self.edit_memory(tenant, session_id, op)
