"""Small SQL helpers that differ by dialect."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase

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
