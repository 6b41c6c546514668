"""The HTTP layer (ARCHITECTURE §6): thin FastAPI routers over `app.service.MemoryService`."""

from app.api.memory import router as memory_router
from app.api.sessions import router as sessions_router
from app.api.system import router as system_router

ROUTERS = (system_router, sessions_router, memory_router)

__all__ = ["ROUTERS"]
