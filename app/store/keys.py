"""API keys: minted once, stored as a sha256 hash (a key is 256 random bits, so a fast hash is
enough: there is nothing to brute-force), looked up by that hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.models import ApiKey
from app.store.sessions import ensure_tenant
from app.store.sql import insert_ignore

KEY_PREFIX = "ma_"
_DISPLAY_CHARS = 10  # "ma_" + 7 characters: enough to tell keys apart in a listing


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    admin: bool


@dataclass(frozen=True)
class KeyInfo:
    id: int
    tenant_id: str
    prefix: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def store_key(db: AsyncSession, key: str, *, tenant_id: str, admin: bool, now: datetime) -> None:
    """Store `key` (idempotent: storing the same key again changes nothing)."""
    await ensure_tenant(db, tenant_id, now)
    await insert_ignore(
        db,
        ApiKey,
        {
            "tenant_id": tenant_id,
            "key_hash": key_hash(key),
            "prefix": key[:_DISPLAY_CHARS],
            "admin": admin,
            "created_at": now,
        },
    )


async def authenticate(db: AsyncSession, key: str) -> Principal | None:
    query = select(ApiKey.tenant_id, ApiKey.admin).where(
        ApiKey.key_hash == key_hash(key), ApiKey.revoked_at.is_(None)
    )
    found = (await db.execute(query)).first()
    return Principal(tenant_id=found.tenant_id, admin=found.admin) if found else None


async def list_keys(db: AsyncSession, tenant_id: str | None = None) -> list[KeyInfo]:
    query = select(ApiKey).order_by(ApiKey.id)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return [
        KeyInfo(row.id, row.tenant_id, row.prefix, row.admin, row.created_at, row.revoked_at)
        for row in (await db.execute(query)).scalars()
    ]


async def revoke(db: AsyncSession, key_id: int, now: datetime) -> bool:
    result = await db.execute(
        update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None)).values(revoked_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
