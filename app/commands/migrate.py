"""`memalpha migrate`: bring the database schema to this version's revision (Alembic, both dialects),
and seed the policy registry's default row when the registry is empty."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("migrate", help="apply the database migrations", description=__doc__)
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: MEMALPHA_DATABASE_URL)")
    parser.add_argument("--revision", default="head", help="target revision (default: head)")
    parser.add_argument("--downgrade", action="store_true", help="go down to --revision instead of up")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from app.settings import Settings
    from app.store import policies, schema
    from app.store.database import Database
    from app.store.types import utcnow

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    db = Database(settings.database_url)
    try:
        before = await schema.current_revision(db)
        if args.downgrade:
            await schema.downgrade(db, args.revision)
        else:
            await schema.upgrade(db, args.revision)
            if args.revision == "head":
                async with db.write() as session:
                    name = settings.policy_model if settings.policy_backend == "openai" else "extractive"
                    await policies.seed_default(session, name=name, base_model=name, now=utcnow())
        after = await schema.current_revision(db)
    finally:
        await db.dispose()
    print(f"{db.safe_url}: schema revision {before or '(none)'} -> {after or '(none)'}")
    return 0
