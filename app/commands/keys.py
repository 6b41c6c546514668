"""`memalpha keys`: mint, list and revoke API keys. A new key is printed once; only its sha256 hash is
stored, so a lost key cannot be shown again (mint a new one and revoke the old)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("keys", help="manage API keys", description=__doc__)
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: MEMALPHA_DATABASE_URL)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="mint a key for a tenant (created on first use)")
    create.add_argument("--tenant", required=True, help="tenant id the key acts as")
    create.add_argument("--admin", action="store_true", help="may also switch the active policy")
    create.set_defaults(func=run)
    listing = actions.add_parser("list", help="list keys (prefixes only)")
    listing.add_argument("--tenant", help="only this tenant's keys")
    listing.set_defaults(func=run)
    revoke = actions.add_parser("revoke", help="revoke a key by its id (see `keys list`)")
    revoke.add_argument("id", type=int)
    revoke.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from app.settings import Settings
    from app.store import keys, schema
    from app.store.database import Database
    from app.store.types import utcnow

    settings = Settings(**({"database_url": args.database_url} if args.database_url else {}))
    db = Database(settings.database_url)
    try:
        auto = settings.auto_migrate if settings.auto_migrate is not None else db.is_sqlite
        await schema.ensure_schema(db, auto_migrate=auto)
        if args.action == "create":
            key = keys.new_key()
            async with db.write() as session:
                await keys.store_key(session, key, tenant_id=args.tenant, admin=args.admin, now=utcnow())
            print(key)
            print(
                f"(tenant {args.tenant}{', admin' if args.admin else ''}; shown once, stored hashed)",
                file=sys.stderr,
            )
        elif args.action == "list":
            async with db.read() as session:
                for info in await keys.list_keys(session, args.tenant):
                    state = f"revoked {info.revoked_at.isoformat()}" if info.revoked_at else "active"
                    admin = " admin" if info.admin else ""
                    print(
                        f"{info.id}\t{info.prefix}…\t{info.tenant_id}{admin}\t{info.created_at.isoformat()}\t{state}"
                    )
        else:
            async with db.write() as session:
                revoked = await keys.revoke(session, args.id, utcnow())
            if not revoked:
                print(f"no active key with id {args.id}", file=sys.stderr)
                return 1
            print(f"revoked key {args.id}")
    except schema.SchemaNotReady as exc:
        print(f"memalpha keys: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    return 0
