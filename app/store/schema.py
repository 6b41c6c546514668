"""Run and check the Alembic migrations from code (the service at start-up, `memalpha migrate`).

The scripts live in the top-level `migrations` package, located through its import path, so this
works from an installed wheel as well as from a checkout (no alembic.ini needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

import migrations
from app.store.database import Database

# Any constant: serialises concurrent `migrate` runs (several replicas starting at once) on Postgres.
_PG_MIGRATION_LOCK = 7_215_001


class SchemaNotReady(RuntimeError):
    """The database is not at the schema this code needs; the message says what to run."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise RuntimeError("migrations/versions holds no revision")
    return head


async def current_revision(db: Database) -> str | None:
    async with db.engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())


async def upgrade(db: Database, revision: str = "head") -> None:
    await _run(db, lambda config: command.upgrade(config, revision))


async def downgrade(db: Database, revision: str) -> None:
    await _run(db, lambda config: command.downgrade(config, revision))


async def _run(db: Database, action: Callable[[Config], None]) -> None:
    def run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        config = _config()
        config.attributes["connection"] = connection
        action(config)

    async with db.write() as session:
        connection = await session.connection()
        await connection.run_sync(run)


async def ensure_schema(db: Database, *, auto_migrate: bool) -> None:
    """Migrate (when allowed) or refuse with a message that names the fix."""
    head, current = head_revision(), await current_revision(db)
    if current == head:
        return
    if auto_migrate:
        await upgrade(db)
        return
    where = "is not migrated" if current is None else f"is at schema revision {current}"
    raise SchemaNotReady(
        f"database {db.safe_url} {where}; this version needs revision {head}. "
        "Run `memalpha migrate` (or set MEMALPHA_AUTO_MIGRATE=true)."
    )
