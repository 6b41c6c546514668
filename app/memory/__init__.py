"""The memory domain: pure data and rules, no I/O."""

from app.memory.blank import is_blank
from app.memory.chunking import split_text
from app.memory.ids import item_id, normalise_id
from app.memory.kinds import LIST_KINDS, MemoryKind
from app.memory.limits import TRUNCATION_MARKER, MemoryLimits
from app.memory.operations import Applier, Operation, OpResult, OpStatus, Tool
from app.memory.render import (
    NONE_RETRIEVED,
    POLICY_VISIBLE_ITEMS,
    render_answer_context,
    render_policy_memory,
)
from app.memory.state import Item, MemoryState
from app.memory.tokens import TokenCounter, WordTokenCounter, truncate_at_word
from app.memory.words import bm25_tokens, cues_for

__all__ = [
    "LIST_KINDS",
    "NONE_RETRIEVED",
    "POLICY_VISIBLE_ITEMS",
    "TRUNCATION_MARKER",
    "Applier",
    "Item",
    "MemoryKind",
    "MemoryLimits",
    "MemoryState",
    "OpResult",
    "OpStatus",
    "Operation",
    "TokenCounter",
    "Tool",
    "WordTokenCounter",
    "bm25_tokens",
    "cues_for",
    "is_blank",
    "item_id",
    "normalise_id",
    "render_answer_context",
    "render_policy_memory",
    "split_text",
    "truncate_at_word",
]
