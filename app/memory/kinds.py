"""The three memory kinds and the names the policy's tools use for them."""

from __future__ import annotations

from enum import StrEnum


class MemoryKind(StrEnum):
    CORE = "core"
    SEMANTIC = "semantic"
    EPISODIC = "episodic"

    @property
    def tool_value(self) -> str:
        """The `memory_type` value of the tools (SPEC §2): the `_memory` suffix is part of it."""
        return f"{self.value}_memory"

    @classmethod
    def parse(cls, value: object) -> MemoryKind | None:
        """Accept `semantic_memory`, `semantic`, any case and padding; None for anything else."""
        if not isinstance(value, str):
            return None
        text = value.strip().lower()
        text = text.removesuffix("_memory")
        try:
            return cls(text)
        except ValueError:
            return None


LIST_KINDS: tuple[MemoryKind, MemoryKind] = (MemoryKind.SEMANTIC, MemoryKind.EPISODIC)
