"""Text views of a memory: what the policy sees (SPEC §3) and what the answerer reads (SPEC §4)."""

from __future__ import annotations

from collections.abc import Sequence

from app.memory.kinds import LIST_KINDS, MemoryKind
from app.memory.state import MemoryState

POLICY_VISIBLE_ITEMS = 5


def render_policy_memory(state: MemoryState, visible: int = POLICY_VISIBLE_ITEMS) -> str:
    """Core in full, then the `visible` most recent items of each list kind as `[id] content` lines,
    each block headed by how many are shown out of how many exist."""
    blocks = [f"<core_memory>\n{state.core if state.core else '(empty)'}\n</core_memory>"]
    for kind in LIST_KINDS:
        items = state.items(kind)
        shown = items[-visible:] if visible > 0 else []
        header = f"<{kind.tool_value}> showing the {len(shown)} most recent of {state.count(kind)} items"
        body = "\n".join(f"[{item.id}] {item.content}" for item in shown) if shown else "(empty)"
        blocks.append(f"{header}\n{body}\n</{kind.tool_value}>")
    return "\n\n".join(blocks)


def render_answer_context(core: str, semantic: Sequence[str], episodic: Sequence[str]) -> str:
    """Core, then numbered semantic items, then numbered episodic items; no ids (the reader does not edit)."""
    sections = [f"Core memory:\n{core if core else '(empty)'}"]
    for kind, contents in ((MemoryKind.SEMANTIC, semantic), (MemoryKind.EPISODIC, episodic)):
        lines = "\n".join(f"{number}. {content}" for number, content in enumerate(contents, start=1))
        sections.append(f"{kind.value.capitalize()} memory:\n{lines if lines else '(none retrieved)'}")
    return "\n\n".join(sections)
