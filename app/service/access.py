"""API keys: authenticating a request's key, minting a tenant's key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.errors import Unauthorized
from app.store import keys
from app.store.keys import Principal
from app.store.types import utcnow

if TYPE_CHECKING:
    from app.service.runtime import MemoryService


class Access:
    def __init__(self, service: MemoryService) -> None:
        self.service = service

    async def authenticate(self, api_key: str) -> Principal:
        async with self.service.db.read() as session:
            principal = await keys.authenticate(session, api_key)
        if principal is None:
            raise Unauthorized("invalid or revoked API key")
        return principal

    async def create_api_key(self, tenant_id: str, *, admin: bool = False) -> str:
        """A new key for `tenant_id` (created on first use); the only time the key is visible."""
        key = keys.new_key()
        async with self.service.db.write() as session:
            await keys.store_key(session, key, tenant_id=tenant_id, admin=admin, now=utcnow())
        return key
