"""Python client of the memalpha HTTP API: `MemoryClient` (blocking) and `AsyncMemoryClient` (asyncio).

Return values are the API's own response models (`app.contracts.schemas`); failures raise `MemalphaError`
subclasses named for the HTTP status; 429 and 503 are retried honouring `Retry-After`.

    from app.client import MemoryClient
    with MemoryClient("http://127.0.0.1:8000", api_key=None) as memory:
        memory.ingest("alice", ["Alice: I moved to Lisbon last spring."])
        print(memory.answer("alice", "Where does Alice live?").answer)
"""

from app.client.aio import AsyncMemoryClient
from app.client.calls import RetryPolicy
from app.client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    MemalphaError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    UnavailableError,
    UnprocessableError,
)
from app.client.sync import MemoryClient
from app.contracts.schemas import ChunkBody, PolicyRegistration
from app.replay.models import ReplayQuestion, ReplayRequest

__all__ = [
    "APIError",
    "AsyncMemoryClient",
    "AuthenticationError",
    "BadRequestError",
    "ChunkBody",
    "ConflictError",
    "MemalphaError",
    "MemoryClient",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PolicyRegistration",
    "RateLimitedError",
    "ReplayQuestion",
    "ReplayRequest",
    "RetryPolicy",
    "ServerError",
    "UnavailableError",
    "UnprocessableError",
]
