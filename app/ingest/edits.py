"""A manual edit that lands while a chunk is with the policy (ARCHITECTURE §5, issue 14).

The reply was proposed on the memory before the edit. When its operations touch nothing the edit
changed (inserts always qualify; an update or delete of an item the edit left alone; a core update
when the edit left core alone), it is applied to the edited memory as it stands: the edit is kept,
the chunk completes, and no attempt is spent. Only a real conflict re-runs the policy on the edited
memory, so an editor that keeps writing cannot make a chunk fail unless it keeps writing the very
items the policy wants to change.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.memory import LIST_KINDS, MemoryKind, MemoryState, Operation, Tool, normalise_id
from app.policy.parser import ToolCall


def changed_items(before: MemoryState, after: MemoryState) -> set[str]:
    """Ids of items added, removed or rewritten between two versions of one memory."""
    old = {item.id: item.content for kind in LIST_KINDS for item in before.items(kind)}
    new = {item.id: item.content for kind in LIST_KINDS for item in after.items(kind)}
    return {item_id for item_id in old.keys() | new.keys() if old.get(item_id) != new.get(item_id)}


def conflicts(proposed_on: MemoryState, edited: MemoryState, calls: Sequence[ToolCall]) -> bool:
    """Whether applying `calls` (proposed on `proposed_on`) to `edited` could undo or misread the edit."""
    touched = changed_items(proposed_on, edited)
    core_edited = proposed_on.core != edited.core
    for call in calls:
        op = Operation.from_call(call.name, call.arguments)
        if op.tool not in (Tool.UPDATE, Tool.DELETE):
            continue  # inserts add items; an unknown tool changes nothing
        if MemoryKind.parse(op.memory_type) is MemoryKind.CORE:
            if core_edited:
                return True
        else:
            target = normalise_id(op.memory_id)
            if target is None or target in touched:
                return True
    return False
