"""A session's memory: core paragraph + ordered semantic and episodic items."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime

from app.memory.kinds import MemoryKind


@dataclass
class Item:
    id: str
    content: str
    created_at: datetime
    updated_at: datetime
    source_seq: int | None = None  # the chunk that wrote it; None for manual edits
    occurred_at: datetime | None = None  # episodic: when the event happened, if known


@dataclass
class MemoryState:
    core: str = ""
    semantic: list[Item] = field(default_factory=list)
    episodic: list[Item] = field(default_factory=list)
    version: int = 0
    next_item: int = 0  # id counter: never decreases, so ids are never reused
    core_truncated: bool = False

    def items(self, kind: MemoryKind) -> list[Item]:
        if kind is MemoryKind.SEMANTIC:
            return self.semantic
        if kind is MemoryKind.EPISODIC:
            return self.episodic
        raise ValueError("core memory has no items")

    def find(self, kind: MemoryKind, item_id: str) -> Item | None:
        return next((item for item in self.items(kind) if item.id == item_id), None)

    def copy(self) -> "MemoryState":
        # Item fields are immutable values, so a copy of each item is a deep copy (deepcopy was the
        # largest per-chunk cost of the service at 10k items).
        return replace(
            self, semantic=[copy.copy(item) for item in self.semantic], episodic=[copy.copy(item) for item in self.episodic]
        )
