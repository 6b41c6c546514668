"""Exporting a session as portable JSON and importing one into a new or empty session."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.contracts.schemas import ExportOut, ImportResult
from app.errors import Conflict
from app.memory import LIST_KINDS
from app.service.reads import session_row
from app.store import audit, chunks, exchange, sessions
from app.store.memory import insert_items, item_row, load_state
from app.store.types import utcnow

if TYPE_CHECKING:
    from app.service.runtime import MemoryService


class Exchange:
    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def export_session(
        self, tenant: str, session_id: str, *, include_chunks: bool, include_operations: bool = False
    ) -> ExportOut:
        key = self.service.key(tenant, session_id)
        async with self.service.db.read() as session:
            row = await session_row(session, key)
            state = await load_state(session, row)
            rows = await chunks.all_for_session(session, key) if include_chunks else None
            operations = await audit.all_for_session(session, key) if include_operations else None
        return exchange.export_payload(session_id, state, rows, operations)

    async def import_session(self, tenant: str, session_id: str, payload: dict[str, Any]) -> ImportResult:
        """Into a new or empty session only (else Conflict); chunks keep their seqs and statuses; an
        exported audit log replaces the `import` entries that otherwise record what was loaded."""
        key = self.service.key(tenant, session_id)
        parsed = exchange.parse_import(payload, self.service.limits, self.service.counter)
        state, results = exchange.to_state(parsed.memory)
        records = parsed.chunks or []
        async with self.service.db.write() as session:
            now = utcnow()
            row = await sessions.lock_or_create_session(session, key, now)
            if row.version or row.next_seq > 1 or row.core or row.next_item:
                raise Conflict(f"session {session_id!r} is not empty; import needs a new or empty session")
            await insert_items(
                session,
                (
                    item_row(key, kind, item, position, state.version)
                    for kind in LIST_KINDS
                    for position, item in enumerate(state.items(kind))
                ),
            )
            if parsed.operations is not None:  # the exported audit log, as it was
                await exchange.restore_operations(session, key, parsed.operations)
            else:
                await audit.record(session, key, results, actor="import", now=now)
            row.core, row.core_truncated = state.core, state.core_truncated
            row.version, row.next_item, row.updated_at = state.version, state.next_item, now
            await self.service.queue.import_chunks(
                session, row, exchange.chunk_rows(tenant, session_id, records), now
            )
        self.service.wakeups.work()
        return ImportResult(
            session_id=session_id,
            version=state.version,
            imported={
                "core": bool(state.core),
                "semantic": len(state.semantic),
                "episodic": len(state.episodic),
                "chunks": len(records),
            },
        )
