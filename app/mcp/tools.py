"""The MCP tools, defined once over a `MemoryAccess`: the service itself (mounted at `/mcp`, scoped to
the caller's key) or an `AsyncMemoryClient` (the stdio bridge to a remote service). Results are the API's
own response models, so an agent sees the same shapes as a REST caller."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Protocol, TypeVar

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError

from app.client import MemalphaError
from app.contracts.schemas import AnswerOut, ChunkBody, IngestResponse, ItemKind, MemoryOut, SearchOut
from app.errors import ServiceError

T = TypeVar("T")
SessionId = Annotated[str, Field(description="the memory to use, e.g. one per user or conversation")]

INSTRUCTIONS = (
    "Long-term memory. `remember` stores what was said (a policy distils it into core, semantic and "
    "episodic memory); `recall` finds stored items; `answer` answers a question from memory with the "
    "evidence it used; `show_memory` returns everything stored for a session."
)


class MemoryAccess(Protocol):
    async def ingest(
        self, session_id: str, chunks: Sequence[str | ChunkBody], *, wait: bool = True
    ) -> IngestResponse: ...

    async def search(
        self, session_id: str, query: str, *, k: int | None = None, memory_type: ItemKind | None = None
    ) -> SearchOut: ...

    async def answer(self, session_id: str, question: str, *, k: int | None = None) -> AnswerOut: ...

    async def get_memory(self, session_id: str) -> MemoryOut: ...


def build_server(access: Callable[[], MemoryAccess], *, version: str) -> MCPServer:
    """`access()` is called per tool call: the mounted server scopes it to the request's key."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server = MCPServer("memalpha", version=version, instructions=INSTRUCTIONS)
    # The SDK's constructor runs logging.basicConfig (a rich handler on the root logger): undo it, the
    # service owns its logging configuration.
    root.handlers[:] = handlers
    root.setLevel(level)

    @server.tool()
    async def remember(
        session_id: SessionId,
        text: Annotated[str, Field(description="what to remember: a message, a turn, a document excerpt")],
        timestamp: Annotated[str | None, Field(description="when it was said, ISO 8601")] = None,
        wait: Annotated[bool, Field(description="wait until the memory is written")] = True,
    ) -> IngestResponse:
        """Store text in a session's memory; returns the memory operations it caused."""
        try:
            chunk = ChunkBody.model_validate({"content": text, "timestamp": timestamp})
        except ValidationError as exc:
            raise ToolError(f"invalid_request: {exc.errors(include_url=False)}") from exc
        return await _guarded(access().ingest(session_id, [chunk], wait=wait))

    @server.tool()
    async def recall(
        session_id: SessionId,
        query: str,
        k: Annotated[int, Field(ge=1, le=100, description="items per memory kind")] = 5,
    ) -> SearchOut:
        """Search a session's semantic and episodic memory (BM25), best first, with scores."""
        return await _guarded(access().search(session_id, query, k=k))

    @server.tool()
    async def answer(session_id: SessionId, question: str) -> AnswerOut:
        """Answer a question from a session's memory; the evidence lists the items it was given."""
        return await _guarded(access().answer(session_id, question))

    @server.tool()
    async def show_memory(session_id: SessionId) -> MemoryOut:
        """Everything a session remembers: the core paragraph, semantic facts and episodic events."""
        return await _guarded(access().get_memory(session_id))

    return server


async def _guarded(call: Awaitable[T]) -> T:
    """Service and client errors become tool errors (`is_error` with the message), not protocol errors."""
    try:
        return await call
    except (ServiceError, MemalphaError) as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from exc
