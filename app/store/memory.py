"""Map a session's memory between rows and `MemoryState`.

Writes are diffs: after the domain applied a batch of operations to a copy of the loaded state, only
the items that appeared, changed or disappeared touch the database."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.memory import LIST_KINDS, Item, MemoryKind, MemoryState
from app.store.models import MemoryItem, Session
from app.store.sessions import SessionKey


async def load_state(db: AsyncSession, row: Session) -> MemoryState:
    state = MemoryState(
        core=row.core, version=row.version, next_item=row.next_item, core_truncated=row.core_truncated
    )
    # Plain columns, not ORM entities: loading is on every chunk and every question.
    query = (
        select(
            MemoryItem.kind,
            MemoryItem.item_id,
            MemoryItem.content,
            MemoryItem.created_at,
            MemoryItem.updated_at,
            MemoryItem.source_seq,
            MemoryItem.occurred_at,
        )
        .where(MemoryItem.tenant_id == row.tenant_id, MemoryItem.session_id == row.id)
        .order_by(MemoryItem.kind, MemoryItem.position)
    )
    for kind, item_id, content, created_at, updated_at, source_seq, occurred_at in await db.execute(query):
        state.items(MemoryKind(kind)).append(
            Item(
                id=item_id,
                content=content,
                created_at=created_at,
                updated_at=updated_at,
                source_seq=source_seq,
                occurred_at=occurred_at,
            )
        )
    return state


def _by_id(state: MemoryState) -> dict[str, tuple[MemoryKind, Item]]:
    return {item.id: (kind, item) for kind in LIST_KINDS for item in state.items(kind)}


def item_row(key: SessionKey, kind: MemoryKind, item: Item, position: int) -> dict[str, object]:
    return {
        "tenant_id": key[0],
        "session_id": key[1],
        "item_id": item.id,
        "kind": kind.value,
        "content": item.content,
        "position": position,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "source_seq": item.source_seq,
        "occurred_at": item.occurred_at,
    }


async def insert_items(db: AsyncSession, rows: Iterable[dict[str, object]]) -> None:
    batch = list(rows)
    if batch:
        await db.execute(MemoryItem.__table__.insert(), batch)


async def save_state(db: AsyncSession, row: Session, before: MemoryState, after: MemoryState) -> None:
    """Write `after` over `before` (the state loaded from `row`) and copy its scalars onto `row`."""
    key = (row.tenant_id, row.id)
    old, new = _by_id(before), _by_id(after)
    gone = [item_id for item_id in old if item_id not in new]
    if gone:
        await db.execute(
            delete(MemoryItem).where(
                MemoryItem.tenant_id == key[0], MemoryItem.session_id == key[1], MemoryItem.item_id.in_(gone)
            )
        )
    # New items are appended and each consumed one tick of the id counter, so the counter value at
    # their creation is a position after every existing one.
    fresh = [(kind, item) for item_id, (kind, item) in new.items() if item_id not in old]
    await insert_items(
        db, (item_row(key, kind, item, before.next_item + n) for n, (kind, item) in enumerate(fresh))
    )
    for item_id, (_kind, item) in new.items():
        previous = old.get(item_id)
        if previous is None:
            continue
        was = previous[1]
        if (was.content, was.updated_at, was.occurred_at) != (
            item.content,
            item.updated_at,
            item.occurred_at,
        ):
            await db.execute(
                update(MemoryItem)
                .where(
                    MemoryItem.tenant_id == key[0],
                    MemoryItem.session_id == key[1],
                    MemoryItem.item_id == item_id,
                )
                .values(content=item.content, updated_at=item.updated_at, occurred_at=item.occurred_at)
            )
    row.core, row.core_truncated = after.core, after.core_truncated
    row.version, row.next_item = after.version, after.next_item


def item_dict(item: Item) -> dict[str, object]:
    return {
        "id": item.id,
        "content": item.content,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
        "source_seq": item.source_seq,
        "occurred_at": item.occurred_at.isoformat() if item.occurred_at else None,
    }
