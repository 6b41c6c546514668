"""Map a session's memory between rows and `MemoryState`.

Writes are diffs: after the domain applied a batch of operations to a copy of the loaded state, only
the items that appeared, changed or disappeared touch the database. The ingest worker reads a partial
memory (`load_view`: the recent items the policy shows, and how many there are; `with_targets`: the
items a reply's operations name), so a chunk costs the same at 1k items as at 100k."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CTE,
    ColumnElement,
    CompoundSelect,
    Exists,
    Select,
    String,
    Table,
    and_,
    any_,
    bindparam,
    delete,
    func,
    or_,
    select,
    true,
    union,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from app.memory import LIST_KINDS, Item, MemoryKind, MemoryState, Operation, Tool, normalise_id
from app.store.models import ContentDigest, MemoryItem, MemoryRemoval, Session, probed
from app.store.sessions import SessionKey, SessionRow, memory_values
from app.store.sql import Executor, json_rows, to_json

# Plain columns, not ORM entities: loading is on every chunk and every question.
_COLUMNS = (
    MemoryItem.kind,
    MemoryItem.item_id,
    MemoryItem.content,
    MemoryItem.created_at,
    MemoryItem.updated_at,
    MemoryItem.source_seq,
    MemoryItem.occurred_at,
    MemoryItem.cues,
)


_INSERT_ITEMS = cast(Table, MemoryItem.__table__).insert()  # built once: most chunks insert items


def _scalars(row: SessionRow) -> MemoryState:
    return MemoryState(
        core=row.core, version=row.version, next_item=row.next_item, core_truncated=row.core_truncated
    )


def _of(row: SessionRow) -> Select[str, str, str, datetime, datetime, int | None, datetime | None, str]:
    return select(*_COLUMNS).where(MemoryItem.tenant_id == row.tenant_id, MemoryItem.session_id == row.id)


def _item(record: Sequence[Any]) -> Item:
    """The item of a row that starts with `_COLUMNS`."""
    _kind, item_id, content, created_at, updated_at, source_seq, occurred_at, cues = record[:8]
    return Item(
        id=item_id,
        content=content,
        created_at=created_at,
        updated_at=updated_at,
        source_seq=source_seq,
        occurred_at=occurred_at,
        cues=cues,
    )


async def load_state(db: Executor, row: SessionRow) -> MemoryState:
    state = _scalars(row)
    for record in await db.execute(_of(row).order_by(MemoryItem.kind, MemoryItem.position)):
        state.items(MemoryKind(record[0])).append(_item(record))
    return state


async def load_changes(db: AsyncSession, row: SessionRow, cached: MemoryState) -> MemoryState:
    """The memory of `row`, from `cached` (the whole memory of the same session at an older version)
    and what was written since: the rows written at a later version (inserted or edited) and the
    removals. Reads O(change) rows; returns a new state (`cached` and its items are not modified)."""
    changed = list(
        await db.execute(
            select(*_COLUMNS, MemoryItem.position)
            .where(
                MemoryItem.tenant_id == row.tenant_id,
                MemoryItem.session_id == row.id,
                MemoryItem.version > cached.version,
            )
            .order_by(MemoryItem.position)
        )
    )
    removed = set(
        (
            await db.execute(
                select(MemoryRemoval.item_id).where(
                    MemoryRemoval.tenant_id == row.tenant_id,
                    MemoryRemoval.session_id == row.id,
                    MemoryRemoval.version > cached.version,
                )
            )
        ).scalars()
    )
    state = _scalars(row)
    for kind in LIST_KINDS:
        rows = {record[1]: _item(record) for record in changed if record[0] == kind.value}
        items = state.items(kind)
        # An item's position is below the id counter of every version it exists in, so rows at or
        # above the cached counter are new items: with no removal and no edit, the memory only grew
        # (the common case, a chunk's inserts) and the cached list is copied whole.
        edited = any(record[8] < cached.next_item for record in changed if record[0] == kind.value)
        if removed or edited:
            items.extend(rows.pop(item.id, item) for item in cached.items(kind) if item.id not in removed)
        else:
            items.extend(cached.items(kind))
        # What is left is new: written after every existing item, so in position order at the end.
        items.extend(rows.values())
    return state


async def load_view(db: Executor, row: SessionRow, recent: int) -> MemoryState:
    """A partial memory: core, the `recent` newest items of each kind and the count of the rest
    (what a policy that shows recent items reads; index scans of `recent` rows and a count)."""
    state = _scalars(row)
    counts = dict(
        (
            await db.execute(
                select(MemoryItem.kind, func.count())
                .where(MemoryItem.tenant_id == row.tenant_id, MemoryItem.session_id == row.id)
                .group_by(MemoryItem.kind)
            )
        ).all()
    )
    for kind in LIST_KINDS:
        query = _of(row).where(MemoryItem.kind == kind.value).order_by(MemoryItem.position.desc())
        newest = [_item(record) for record in await db.execute(query.limit(recent))] if recent > 0 else []
        state.items(kind).extend(reversed(newest))
        state.unloaded[kind] = counts.get(kind.value, 0) - len(newest)
    return state


def targets(operations: Sequence[Operation]) -> tuple[set[str], set[tuple[MemoryKind, str]]]:
    """What applying `operations` reads beyond the recent items: the ids updates and deletes name,
    and the contents inserts would duplicate (stripped, as the applier compares them)."""
    ids: set[str] = set()
    contents: set[tuple[MemoryKind, str]] = set()
    for op in operations:
        kind = MemoryKind.parse(op.memory_type)
        if kind is None or kind is MemoryKind.CORE:
            continue
        if op.tool in (Tool.UPDATE, Tool.DELETE) and (item_id := normalise_id(op.memory_id)) is not None:
            ids.add(item_id)
        elif op.tool == Tool.INSERT and isinstance(op.content, str):
            contents.add((kind, op.content.strip()))
    return ids, contents


def target_filter(
    ids: Collection[str], contents: Collection[tuple[MemoryKind, str]]
) -> ColumnElement[bool] | None:
    """The items that have one of `ids` or one of `contents` (what `targets` found), as a filter on
    `memory_items` beside the session's key; None when there is nothing to look for."""
    wanted: list[ColumnElement[bool]] = []
    if ids:
        wanted.append(MemoryItem.item_id.in_(sorted(ids)))
    # One condition per content, each bounding the content index (`_same_content`).
    wanted += [_same_content(_ITEMS.c.kind, _ITEMS.c.content, kind.value, text) for kind, text in contents]
    return or_(*wanted) if wanted else None


def _of_session(
    tenant: ColumnElement[str] | str, session: ColumnElement[str] | str
) -> tuple[ColumnElement[bool], ...]:
    """The session's part of a lookup of named items, as the indexes of those lookups hold it (see
    `probed`: with the plain columns, Postgres without statistics reads the session's items)."""
    return probed(_ITEMS.c.tenant_id) == tenant, probed(_ITEMS.c.session_id) == session


def _same_content(
    kind: ColumnElement[str], content: ColumnElement[str], wanted_kind: Any, wanted: Any
) -> ColumnElement[bool]:
    """`kind` and `content` equal to the wanted ones, with the digest the content index holds."""
    return and_(kind == wanted_kind, ContentDigest(content) == ContentDigest(wanted), content == wanted)


async def with_targets(
    db: Executor,
    row: SessionRow,
    state: MemoryState,
    ids: Collection[str],
    contents: Collection[tuple[MemoryKind, str]],
) -> MemoryState:
    """`state` (a partial memory of `row`) with the not yet loaded items that have one of `ids` or
    one of `contents` loaded too, so the applier finds them as in the whole memory. Returns a new
    state."""
    wanted = target_filter(ids, contents) if state.partial else None
    if wanted is None:
        return state
    query = target_query((row.tenant_id, row.id), wanted).order_by(MemoryItem.position)
    return with_found(state, list(await db.execute(query)))


def target_query(key: SessionKey, wanted: ColumnElement[bool]) -> Select[*tuple[Any, ...]]:
    """The items of session `key` that `wanted` (`target_filter`) selects, as `with_found` reads
    them, with their position last (to order them by)."""
    return select(*_COLUMNS, MemoryItem.position).where(*_of_session(*key), wanted)


_ITEMS = cast(Table, MemoryItem.__table__)


def bound_targets(tenant: ColumnElement[str], session: ColumnElement[str]) -> CompoundSelect[Any]:
    """`target_query` as one statement for every reply (Postgres), built once: the ids and contents
    are parameters (`bound_target_params`), so no statement is built, keyed and compiled per chunk.
    The ids by one scan of the item index, each content by the content index (a nested loop over the
    contents)."""
    of_session = _of_session(tenant, session)
    by_id = _ITEMS.c.item_id == any_(bindparam("target_ids", type_=postgresql.ARRAY(String)))
    contents = json_rows("target_contents", _ITEMS.c.kind, _ITEMS.c.content)
    columns = (*(_ITEMS.c[column.key] for column in _COLUMNS), _ITEMS.c.position)
    # A lateral subquery per content, kept from being pulled up by its OFFSET: Postgres guesses 100 rows
    # for a JSON array of one or two, and as a plain join it then hashes every item of the session
    # (8 ms a chunk at 10k items) instead of probing the content index once per content.
    by_content = (
        select(*columns)
        .where(
            *of_session, _same_content(_ITEMS.c.kind, _ITEMS.c.content, contents.c.kind, contents.c.content)
        )
        .offset(0)
        .lateral("by_content")
    )
    # UNION, not UNION ALL: an item may be named by id and by content.
    return union(
        select(*columns).where(*of_session, by_id),
        select(*by_content.c).select_from(contents).join(by_content, true()),
    )


def bound_target_params(ids: Collection[str], contents: Collection[tuple[MemoryKind, str]]) -> dict[str, Any]:
    """The parameters of `bound_targets` (what `targets` found; none for a whole memory)."""
    return {
        "target_ids": sorted(ids),
        "target_contents": to_json([{"kind": kind.value, "content": text} for kind, text in contents]),
    }


def with_found(state: MemoryState, records: Sequence[Sequence[Any]]) -> MemoryState:
    """`state` with the items of `records` (rows that start with `_COLUMNS`, in position order, read
    by `target_filter`) that it has not loaded. Unloaded items are older than every loaded one: they go
    in front, in position order. Returns a new state (or `state` when nothing is new)."""
    loaded = {item.id for kind in LIST_KINDS for item in state.items(kind)}
    found = [record for record in records if record[1] not in loaded]
    if not found:
        return state
    out = state.copy()
    for kind in LIST_KINDS:
        older = [_item(record) for record in found if record[0] == kind.value]
        out.items(kind)[:0] = older
        out.unloaded[kind] = out.unloaded.get(kind, 0) - len(older)
    return out


def _by_id(state: MemoryState) -> dict[str, tuple[MemoryKind, Item]]:
    return {item.id: (kind, item) for kind in LIST_KINDS for item in state.items(kind)}


def item_row(key: SessionKey, kind: MemoryKind, item: Item, position: int, version: int) -> dict[str, object]:
    """The row of `item`, written at session version `version`."""
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
        "cues": item.cues,
        "version": version,
    }


# `item_row`'s keys, in its order.
FRESH_COLUMNS = (
    "tenant_id",
    "session_id",
    "item_id",
    "kind",
    "content",
    "position",
    "created_at",
    "updated_at",
    "source_seq",
    "occurred_at",
    "cues",
    "version",
)


async def insert_items(db: Executor, rows: Iterable[dict[str, object]]) -> None:
    batch = list(rows)
    if batch:
        await db.execute(_INSERT_ITEMS, batch)


async def save_state(db: AsyncSession, row: Session, before: MemoryState, after: MemoryState) -> None:
    """Write `after` over `before` (the state loaded from `row`) and copy its scalars onto `row`."""
    await save_items(db, (row.tenant_id, row.id), before, after)
    for name, value in memory_values(after).items():
        setattr(row, name, value)


@dataclass(frozen=True)
class ItemChanges:
    """What writing `after` over `before` changes in `memory_items`: the rows of new items, the
    columns of edited ones (`EDITED_COLUMNS` with `item_id` and the session's key) and the removals
    (the session's key, `item_id`, `version`), all as column values."""

    fresh: list[dict[str, Any]]
    edited: list[dict[str, Any]]
    gone: list[dict[str, Any]]


# The columns an edit of an item writes.
EDITED_COLUMNS = ("content", "cues", "updated_at", "occurred_at", "version")


def item_changes(key: SessionKey, before: MemoryState, after: MemoryState) -> ItemChanges:
    """The items of `after` against those of `before` (the state loaded from session `key`)."""
    old, new = _by_id(before), _by_id(after)
    keyed: dict[str, Any] = {"tenant_id": key[0], "session_id": key[1]}
    gone = [keyed | {"item_id": item_id, "version": after.version} for item_id in old if item_id not in new]
    # New items are appended and each consumed one tick of the id counter, so the counter value at
    # their creation is a position after every existing one.
    fresh = [(kind, item) for item_id, (kind, item) in new.items() if item_id not in old]
    edited: list[dict[str, Any]] = []
    for item_id, (_kind, item) in new.items():
        previous = old.get(item_id)
        if previous is None:
            continue
        was = previous[1]
        if (was.content, was.cues, was.updated_at, was.occurred_at) != (
            item.content,
            item.cues,
            item.updated_at,
            item.occurred_at,
        ):
            edited.append(
                keyed
                | {
                    "item_id": item_id,
                    "content": item.content,
                    "cues": item.cues,
                    "updated_at": item.updated_at,
                    "occurred_at": item.occurred_at,
                    "version": after.version,
                }
            )
    return ItemChanges(
        fresh=[
            item_row(key, kind, item, before.next_item + n, after.version)
            for n, (kind, item) in enumerate(fresh)
        ],
        edited=edited,
        gone=gone,
    )


_REMOVALS = cast(Table, MemoryRemoval.__table__)
# Parameters not named as columns: an UPDATE would take those as values to SET.
_OF_ROW = (
    *_of_session(bindparam("row_tenant"), bindparam("row_session")),
    _ITEMS.c.item_id == bindparam("row_item"),
)
_DELETE_ITEM = delete(_ITEMS).where(*_OF_ROW)
_EDIT_ITEM = (
    update(_ITEMS).where(*_OF_ROW).values({name: bindparam(f"set_{name}") for name in EDITED_COLUMNS})
)


async def save_items(db: Executor, key: SessionKey, before: MemoryState, after: MemoryState) -> None:
    """Write the items of `after` over those of `before` (the state loaded from session `key`); the
    session row's scalars are the caller's to write (`memory_values`)."""
    changes = item_changes(key, before, after)
    if changes.gone:
        await db.execute(_DELETE_ITEM, [_row_key(row) for row in changes.gone])
        await db.execute(_REMOVALS.insert(), changes.gone)
    await insert_items(db, changes.fresh)
    for row in changes.edited:
        await db.execute(_EDIT_ITEM, _row_key(row) | {f"set_{name}": row[name] for name in EDITED_COLUMNS})


def _row_key(row: dict[str, Any]) -> dict[str, Any]:
    return {"row_tenant": row["tenant_id"], "row_session": row["session_id"], "row_item": row["item_id"]}


# `changes_ctes`' JSON parameters (`changes_json`), one array of rows each.
_CHANGES = ("items_fresh", "items_edited", "items_gone")
_EDITED_IDS, _GONE_IDS = "items_edited_ids", "items_gone_ids"


def changes_ctes(applied: Exists, tenant: ColumnElement[str], session: ColumnElement[str]) -> tuple[CTE, ...]:
    """`ItemChanges` of session (`tenant`, `session`) written by one statement (Postgres):
    data-modifying CTEs that read the rows from JSON parameters (`changes_json`) and write only where
    `applied` holds."""
    fresh = json_rows(_CHANGES[0], *(_ITEMS.c[name] for name in FRESH_COLUMNS))
    edited = json_rows(_CHANGES[1], *(_ITEMS.c[name] for name in ("item_id", *EDITED_COLUMNS)))
    gone = json_rows(_CHANGES[2], *_REMOVALS.c)

    def named(ids: str) -> tuple[ColumnElement[bool], ...]:
        # The items by the item index, the ids as an array: joined to the JSON rows alone, the
        # planner (which guesses 100 rows for them) hashes the whole table instead.
        ids_param = bindparam(ids, type_=postgresql.ARRAY(String))
        return (*_of_session(tenant, session), _ITEMS.c.item_id == any_(ids_param))

    return (
        _ITEMS.insert()
        .from_select(FRESH_COLUMNS, select(*fresh.c).where(applied))
        .returning(_ITEMS.c.item_id)
        .cte("items_inserted"),
        update(_ITEMS)
        .where(*named(_EDITED_IDS), _ITEMS.c.item_id == edited.c.item_id, applied)
        .values({name: edited.c[name] for name in EDITED_COLUMNS})
        .returning(_ITEMS.c.item_id)
        .cte("items_updated"),
        delete(_ITEMS).where(*named(_GONE_IDS), applied).returning(_ITEMS.c.item_id).cte("items_deleted"),
        _REMOVALS.insert()
        .from_select([column.name for column in _REMOVALS.c], select(*gone.c).where(applied))
        .returning(_REMOVALS.c.item_id)
        .cte("items_removed"),
    )


def changes_json(items: ItemChanges) -> dict[str, Any]:
    """The parameters of `changes_ctes` for `items`."""
    return dict(
        zip(_CHANGES, (to_json(items.fresh), to_json(items.edited), to_json(items.gone)), strict=True)
    ) | {
        _EDITED_IDS: [row["item_id"] for row in items.edited],
        _GONE_IDS: [row["item_id"] for row in items.gone],
    }
