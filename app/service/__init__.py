"""The application service: a composition root (`runtime.MemoryService`) and one module per use case
(see `runtime`'s docstring for the map). `from app.service import MemoryService` is the entry."""

from app.ingest.prepare import ChunkIn
from app.service.runtime import MemoryService
from app.store.keys import Principal

__all__ = ["ChunkIn", "MemoryService", "Principal"]
