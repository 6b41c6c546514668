"""Migrations run up and down on PostgreSQL and SQLite, match the models, and gate the service."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.cli import main
from app.service import MemoryService
from app.settings import Settings
from app.store import schema
from app.store.database import Database
from app.store.models import Base

TABLES = {"tenants", "api_keys", "sessions", "chunks", "memory_items", "operations", "policies"}


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as connection:
        return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))


async def _model_drift(db: Database) -> list[object]:
    async with db.engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )


async def test_migrations_up_down_up_and_match_the_models(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        assert await schema.current_revision(db) is None
        await schema.upgrade(db)
        assert await schema.current_revision(db) == schema.head_revision()
        assert TABLES <= await _tables(db)
        assert await _model_drift(db) == []  # the migration creates exactly what the models declare
        await schema.downgrade(db, "base")
        assert await schema.current_revision(db) is None
        assert not TABLES & await _tables(db)
        await schema.upgrade(db)
        assert TABLES <= await _tables(db)
    finally:
        await db.dispose()


async def test_service_refuses_an_unmigrated_database_unless_auto_migrate(empty_db_url: str) -> None:
    settings = Settings(_env_file=None, database_url=empty_db_url, auto_migrate=False)  # type: ignore[call-arg]
    with pytest.raises(schema.SchemaNotReady, match="memalpha migrate"):
        await MemoryService(settings).start(run_workers=False)

    service = MemoryService(settings.model_copy(update={"auto_migrate": True}))
    await service.start(run_workers=False)
    try:
        assert (await service.policies.get_policy()).name == "extractive"  # the registry's seeded default
        assert await service.ready(full=True) == {"database": True, "policy": True}
    finally:
        await service.stop()


def test_default_auto_migrate_is_sqlite_only(empty_db_url: str) -> None:
    """Unset MEMALPHA_AUTO_MIGRATE: the embedded SQLite default migrates itself, Postgres refuses."""
    import asyncio

    settings = Settings(_env_file=None, database_url=empty_db_url)  # type: ignore[call-arg]
    service = MemoryService(settings)

    async def start_and_stop() -> None:
        await service.start(run_workers=False)
        await service.stop()

    if empty_db_url.startswith("sqlite"):
        asyncio.run(start_and_stop())
    else:
        with pytest.raises(schema.SchemaNotReady):
            asyncio.run(start_and_stop())


def test_cli_migrate_then_keys(empty_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--database-url", empty_db_url]) == 0
    assert f"-> {schema.head_revision()}" in capsys.readouterr().out
    assert main(["keys", "--database-url", empty_db_url, "create", "--tenant", "acme", "--admin"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("ma_") and len(key) > 40
    assert main(["keys", "--database-url", empty_db_url, "list", "--tenant", "acme"]) == 0
    listing = capsys.readouterr().out
    assert key[:10] in listing and key not in listing  # only the prefix is ever shown again
    key_id = int(listing.split("\t")[0])
    assert main(["keys", "--database-url", empty_db_url, "revoke", str(key_id)]) == 0
    assert main(["keys", "--database-url", empty_db_url, "revoke", str(key_id)]) == 1
