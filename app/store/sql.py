"""Small SQL helpers that differ by dialect."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

T = TypeVar("T")

# Values per `IN (…)` list: far below the bind-parameter limits (Postgres 65,535; SQLite 32,766 or
# 250,000 by build), whatever a request holds.
IN_BATCH = 1000


def batched(values: Sequence[T], size: int = IN_BATCH) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


async def insert_ignore(session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]) -> None:
    """INSERT … ON CONFLICT DO NOTHING (both dialects spell it the same, through different classes)."""
    dialect = (await session.connection()).dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(insert(model).values(**values).on_conflict_do_nothing())
