"""Request dependencies: the service facade and the caller's tenant (bearer API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Forbidden, Unauthorized
from app.service import MemoryService, Principal

# The tenant of every request when auth is off (embedded default, loopback only).
LOCAL_TENANT = "local"

_bearer = HTTPBearer(auto_error=False, description="an API key from `memalpha keys create --tenant T`")


def get_service(request: Request) -> MemoryService:
    service: MemoryService = request.app.state.service
    return service


async def principal_for(app: FastAPI, api_key: str | None) -> Principal:
    """The caller a bearer key names; shared by the routes and the mounted MCP endpoint."""
    if not app.state.auth_enabled:
        return Principal(tenant_id=LOCAL_TENANT, admin=True)
    if not api_key:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    service: MemoryService = app.state.service
    return await service.access.authenticate(api_key)


async def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    return await principal_for(request.app, credentials.credentials if credentials else None)


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.admin:
        raise Forbidden("this needs an admin API key")
    return principal


Service = Annotated[MemoryService, Depends(get_service)]
Caller = Annotated[Principal, Depends(get_principal)]
Admin = Annotated[Principal, Depends(get_admin)]
