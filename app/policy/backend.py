"""The policy protocol: one call per chunk, memory state in, ordered tool calls out (ARCHITECTURE §3).

Backends do not record Prometheus metrics themselves: the caller (ingest worker, trainer, evaluator)
gets everything in `PolicyReply` and records what it needs, so nothing is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from app.memory.state import MemoryState
from app.policy.parser import ToolCall


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class PolicyReply:
    calls: list[ToolCall]
    raw_text: (
        str  # the model's reply as received (native calls rendered as JSON), kept for audit and training
    )
    usage: Usage
    model: str  # the model (or adapter) that answered
    latency_s: float  # wall time of the whole proposal, retries included
    parse_errors: list[str] = field(default_factory=list)
    visible_items: int = 0  # recent items per kind the prompt showed (after budget halving)


class PolicyError(Exception):
    """The policy could not be reached or refused the request (after the backend's own retries).

    `retryable` is False for client errors (4xx other than 408/429) that will fail again unchanged:
    the ingest worker may then fail the chunk at once instead of retrying it later."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@runtime_checkable
class PolicyBackend(Protocol):
    name: str
    # How many of the newest items of each kind `propose` reads (None: the whole memory). The ingest
    # worker then loads only those (with the count of the others) instead of the whole memory.
    view_items: int | None

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> PolicyReply:
        """Tool calls for `chunk` given `state`; `model` overrides the configured model (e.g. the
        active policy version's LoRA adapter name). Raises `PolicyError` on transport failure."""
        ...

    async def health(self) -> bool: ...

    async def aclose(self) -> None: ...
