"""Pool checkout on Postgres (`app/store/database.py`): a pooled connection the server dropped is
replaced before use, and a sound one is reused (the check costs no round trip, so it must not be
mistaken either way)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from app.store.database import Database

pytestmark = pytest.mark.postgres


async def _backend_pid(db: Database) -> int:
    async with db.read() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_sound_connection_is_reused(migrated_pg_url: str) -> None:
    db = Database(migrated_pg_url, pool_size=1)
    try:
        first = await _backend_pid(db)
        async with db.write() as session:  # a write with a NOTIFY leaves nothing to read either
            await session.execute(text("SELECT pg_notify('memalpha_test', 'x')"))
        assert await _backend_pid(db) == first
    finally:
        await db.dispose()


async def test_dropped_connection_is_replaced(
    migrated_pg_url: str, pg_admin: psycopg.Connection[Any]
) -> None:
    db = Database(migrated_pg_url, pool_size=1)
    try:
        pid = await _backend_pid(db)
        pg_admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(200):  # until the backend has exited (its socket is closed by then)
            if not pg_admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                break
            await asyncio.sleep(0.01)
        assert await _backend_pid(db) != pid  # no error: the pool connected afresh
    finally:
        await db.dispose()
