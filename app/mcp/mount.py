"""`/mcp` in the service: the SDK's streamable-HTTP handler (stateless, JSON answers) behind the REST API's
bearer-key check; each tool call acts as the key's tenant, straight on the service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar

from fastapi import FastAPI
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.deps import principal_for
from app.api.errors import error_response
from app.api.sessions import chunk_in
from app.contracts.schemas import AnswerOut, ChunkBody, IngestResponse, ItemKind, MemoryOut, SearchOut
from app.errors import ServiceError, Unauthorized
from app.mcp.tools import build_server
from app.service import MemoryService, Principal

PATH = "/mcp"
_caller: ContextVar[Principal] = ContextVar("memalpha_mcp_caller")


class ServiceAccess:
    """The tools' `MemoryAccess` on the service, as one tenant."""

    def __init__(self, service: MemoryService, tenant: str) -> None:
        self.service, self.tenant = service, tenant

    async def ingest(
        self, session_id: str, chunks: Sequence[str | ChunkBody], *, wait: bool = True
    ) -> IngestResponse:
        inputs = [chunk_in(chunk) for chunk in chunks]
        return await self.service.ingestion.ingest(self.tenant, session_id, inputs, wait=wait)

    async def search(
        self, session_id: str, query: str, *, k: int | None = None, memory_type: ItemKind | None = None
    ) -> SearchOut:
        return await self.service.answers.search(self.tenant, session_id, query, k=k, memory_type=memory_type)

    async def answer(self, session_id: str, question: str, *, k: int | None = None) -> AnswerOut:
        return await self.service.answers.answer(self.tenant, session_id, question, k=k)

    async def get_memory(self, session_id: str) -> MemoryOut:
        return await self.service.memory.get_memory(self.tenant, session_id)


class _KeyGuard:
    """The REST API's authentication in front of the MCP handler: a missing or bad key is a 401 in the
    API's error shape before the SDK sees the request."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app, self.fastapi_app = app, fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = Headers(scope=scope).get("authorization", "")
        scheme, _, key = authorization.partition(" ")
        try:
            principal = await principal_for(self.fastapi_app, key if scheme.lower() == "bearer" else None)
        except ServiceError as exc:
            response = error_response(exc.status_code, exc.code, exc.message)
            if isinstance(exc, Unauthorized):
                response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        token = _caller.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            _caller.reset(token)


def mount_mcp(
    app: FastAPI, service: MemoryService, *, host: str, version: str
) -> AbstractAsyncContextManager[None]:
    """Adds the `/mcp` route; returns the context the app's lifespan must hold open (the SDK's task group)."""
    server = build_server(lambda: ServiceAccess(service, _caller.get().tenant_id), version=version)
    # Builds the session manager; `host` keeps the SDK's DNS-rebinding guard for loopback binds.
    server.streamable_http_app(stateless_http=True, json_response=True, host=host)
    handler = _KeyGuard(StreamableHTTPASGIApp(server.session_manager), app)
    # Starlette routes a non-function endpoint as an ASGI app; its stub types only request handlers.
    app.add_route(PATH, handler, methods=["GET", "POST", "DELETE"], include_in_schema=False)  # type: ignore[arg-type]

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        # The SDK's task group must be entered and left by one task; a lifespan may be left by another
        # (test fixtures, some servers), so a task of its own holds it.
        started, stop = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with server.session_manager.run():
                started.set()
                await stop.wait()

        holder = asyncio.create_task(hold(), name="memalpha-mcp")
        starting = asyncio.ensure_future(started.wait())
        await asyncio.wait({holder, starting}, return_when=asyncio.FIRST_COMPLETED)
        starting.cancel()
        if holder.done():
            holder.result()  # start-up failed: raise it here
        try:
            yield
        finally:
            stop.set()
            await holder

    return running()
