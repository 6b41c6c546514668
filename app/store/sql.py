"""Small SQL helpers that differ by dialect."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Column, Text, bindparam, cast, column, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.selectable import TableValuedAlias

T = TypeVar("T")

# What runs a transaction's statements: an ORM session (the API's paths, which load entities) or a
# plain connection (the ingest worker's, `Database.write_connection`). Helpers that only execute
# statements take either.
Executor = AsyncSession | AsyncConnection

# Values per `IN (…)` list: far below the bind-parameter limits (Postgres 65,535; SQLite 32,766 or
# 250,000 by build), whatever a request holds.
IN_BATCH = 1000


def batched(values: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def dialect_name(db: Executor) -> str:
    connection = db if isinstance(db, AsyncConnection) else await db.connection()
    return connection.dialect.name


async def insert_ignore(session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]) -> None:
    """INSERT … ON CONFLICT DO NOTHING (both dialects spell it the same, through different classes)."""
    dialect = await dialect_name(session)
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(insert(model).values(**values).on_conflict_do_nothing())


def json_rows(param: str, *columns: Column[Any]) -> TableValuedAlias:
    """The rows of the JSON array bound as `param` (`to_json`) as a table with `columns`' names and
    types (Postgres `jsonb_to_recordset`): a statement gets any number of rows in one parameter."""
    rows = func.jsonb_to_recordset(cast(bindparam(param, type_=Text), JSONB))
    return rows.table_valued(*(column(c.name, c.type) for c in columns)).render_derived(
        name=f"{param}_rows", with_types=True
    )


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    """Rows for `json_rows`: datetimes (aware, as the columns hold them) in ISO 8601 with their offset."""
    return json.dumps(rows, default=_json_value, ensure_ascii=False)


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.isoformat()
    raise TypeError(f"not a column value: {value!r}")
