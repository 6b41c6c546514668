"""The ASGI application: `create_app()` wires settings, the service facade, middleware and routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from importlib.metadata import version

from fastapi import FastAPI

from app.api.docs import install_docs, operation_id
from app.api.errors import install_error_handlers
from app.api.inspector import install_inspector
from app.api.inspector import router as inspector_router
from app.api.memory import router as memory_router
from app.api.middleware import BodyGuard, HTTPMetrics, RequestId
from app.api.openapi import install_openapi
from app.api.replay import router as replay_router
from app.api.sessions import router as sessions_router
from app.api.system import router as system_router
from app.replay.jobs import Replays
from app.service import MemoryService
from app.settings import Settings, get_settings
from app.store.outage import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

ROUTERS = (system_router, sessions_router, memory_router, replay_router, inspector_router)


def create_app(settings: Settings | None = None, service: MemoryService | None = None) -> FastAPI:
    """The app owns the service's lifecycle: the lifespan starts it (with in-process workers when
    `settings.run_workers`) and stops it, also when the caller built the service (custom policy)."""
    settings = settings or get_settings()
    auth_enabled = settings.auth_enabled  # raises for auth=off on a non-loopback bind: fail at start-up
    service = service or MemoryService(settings)
    replays = Replays(service)

    mcp: AbstractAsyncContextManager[None] = nullcontext()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start(run_workers=settings.run_workers)
        try:
            async with mcp:
                yield
        finally:
            await replays.stop()
            await service.stop()

    app = FastAPI(
        title="memalpha",
        version=version("memalpha"),
        description="Agent memory service implementing Mem-alpha: a policy writes core/semantic/episodic "
        "memory chunk by chunk; questions are answered from memory through BM25.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.replays = replays
    app.state.auth_enabled = auth_enabled
    routes = [route for router in ROUTERS for route in router.routes]
    install_error_handlers(app, routes, UNAVAILABLE_ERRORS)
    install_openapi(app, settings.max_session_id_length)
    for router in ROUTERS:
        app.include_router(router)
    install_docs(app)
    install_inspector(app)
    try:
        from app.mcp.mount import mount_mcp  # the `mcp` extra
    except ModuleNotFoundError as missing:
        if missing.name is None or not missing.name.startswith("mcp"):
            raise
        log.info("no /mcp endpoint: install memalpha[mcp] for it")
    else:
        mcp = mount_mcp(app, service, host=settings.host, version=app.version)
    # Added last = outermost: the metric also times requests the body guard turns away.
    app.add_middleware(BodyGuard, max_bytes=settings.max_request_bytes)
    app.add_middleware(HTTPMetrics, routes=routes)
    app.add_middleware(RequestId)  # outermost: every answer, also a refused body, carries the id
    return app
