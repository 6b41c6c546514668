"""The ASGI application: `create_app()` wires settings, the service facade, middleware and routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI

from app.api import ROUTERS
from app.api.errors import install_error_handlers
from app.api.middleware import BodyGuard, HTTPMetrics
from app.service import MemoryService
from app.settings import Settings, get_settings


def create_app(settings: Settings | None = None, service: MemoryService | None = None) -> FastAPI:
    """The app owns the service's lifecycle: the lifespan starts it (with in-process workers when
    `settings.run_workers`) and stops it, also when the caller built the service (custom policy)."""
    settings = settings or get_settings()
    auth_enabled = settings.auth_enabled  # raises for auth=off on a non-loopback bind: fail at start-up
    service = service or MemoryService(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start(run_workers=settings.run_workers)
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="memalpha",
        version=version("memalpha"),
        description="Agent memory service implementing Mem-alpha: a policy writes core/semantic/episodic "
        "memory chunk by chunk; questions are answered from memory through BM25.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.auth_enabled = auth_enabled
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    # Added last = outermost: the metric also times requests the body guard turns away.
    app.add_middleware(BodyGuard, max_bytes=settings.max_request_bytes)
    app.add_middleware(HTTPMetrics, routes=[route for router in ROUTERS for route in router.routes])
    return app
