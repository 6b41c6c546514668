"""Text views of a memory: what the policy sees (SPEC §3) and what the answerer reads (SPEC §4)."""

from __future__ import annotations

from collections.abc import Sequence

from app.memory.kinds import LIST_KINDS, MemoryKind
from app.memory.state import MemoryState

POLICY_VISIBLE_ITEMS = 5
NONE_RETRIEVED = "(none retrieved)"  # what the answer context shows for a kind without items


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


def render_answer_context(
    core: str, semantic: Sequence[str], episodic: Sequence[str], days: Sequence[str | None] | None = None
) -> str:
    """Core, then numbered semantic items, then numbered episodic items; no ids (the reader does not edit).
    `days`, one per episodic item (budget mode): a `day:` line opens each run of items of one day, so the
    date is written once per day instead of on every item (whose text then leaves it out)."""
    sections = [f"Core memory:\n{core if core else '(empty)'}"]
    for kind, lines in (
        (MemoryKind.SEMANTIC, _numbered(semantic)),
        (MemoryKind.EPISODIC, _numbered(episodic, days)),
    ):
        body = "\n".join(lines) if lines else NONE_RETRIEVED
        sections.append(f"{kind.value.capitalize()} memory:\n{body}")
    return "\n\n".join(sections)


def _numbered(contents: Sequence[str], days: Sequence[str | None] | None = None) -> list[str]:
    lines: list[str] = []
    previous: str | None = None
    for number, content in enumerate(contents, start=1):
        day = days[number - 1] if days is not None else None
        if day != previous:  # an undated item after dated ones is marked, not left under their day
            lines.append(f"{day if day is not None else 'No date'}:")
        previous = day
        lines.append(f"{number}. {content}")
    return lines
