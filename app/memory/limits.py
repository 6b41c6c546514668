"""Size limits of a session's memory (configured through settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryLimits:
    core_tokens: int = 512
    max_item_tokens: int = 1024
    max_items_per_kind: int = 10_000


TRUNCATION_MARKER = " [truncated]"
