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
    # Index-only words: what a search may match the item by but the answer context never shows (the
    # content words of the question its source turn answered that the content lacks). Space-separated
    # surface words, so every analyzer indexes them as it indexes content; "" for none.
    cues: str = ""


@dataclass
class MemoryState:
    core: str = ""
    semantic: list[Item] = field(default_factory=list)
    episodic: list[Item] = field(default_factory=list)
    version: int = 0
    next_item: int = 0  # id counter: never decreases, so ids are never reused
    core_truncated: bool = False
    # A partial memory (the ingest worker's view): how many items of each kind exist but were not
    # loaded. They are all older than the loaded ones that follow them in the list, and `count`
    # includes them. Empty for a whole memory.
    unloaded: dict[MemoryKind, int] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return any(self.unloaded.values())

    def count(self, kind: MemoryKind) -> int:
        """How many items of `kind` the memory holds, loaded or not."""
        return len(self.items(kind)) + self.unloaded.get(kind, 0)

    def items(self, kind: MemoryKind) -> list[Item]:
        if kind is MemoryKind.SEMANTIC:
            return self.semantic
        if kind is MemoryKind.EPISODIC:
            return self.episodic
        raise ValueError("core memory has no items")

    def find(self, kind: MemoryKind, item_id: str) -> Item | None:
        return next((item for item in self.items(kind) if item.id == item_id), None)

    def copy(self) -> MemoryState:
        # Item fields are immutable values, so a copy of each item is a deep copy (deepcopy was the
        # largest per-chunk cost of the service at 10k items).
        return replace(
            self,
            semantic=[copy.copy(item) for item in self.semantic],
            episodic=[copy.copy(item) for item in self.episodic],
            unloaded=dict(self.unloaded),
        )

    def trimmed(self, recent: int) -> MemoryState:
        """This memory with only the `recent` newest items of each kind loaded (the others counted in
        `unloaded`); the items are shared, not copied."""
        out = replace(self, unloaded=dict(self.unloaded))
        for kind in (MemoryKind.SEMANTIC, MemoryKind.EPISODIC):
            items = self.items(kind)
            keep = items[-recent:] if recent > 0 else []
            out.unloaded[kind] = out.unloaded.get(kind, 0) + len(items) - len(keep)
            if kind is MemoryKind.SEMANTIC:
                out.semantic = list(keep)
            else:
                out.episodic = list(keep)
        return out
