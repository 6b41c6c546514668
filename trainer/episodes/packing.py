"""Pack small text units (turns, paragraphs, labelled samples) into chunks of at most N tokens."""

from __future__ import annotations

from collections.abc import Iterable

from app.memory import TokenCounter, split_text


def pack_units(
    units: Iterable[str], max_tokens: int, counter: TokenCounter, separator: str = "\n\n"
) -> list[str]:
    """Greedy in order; a unit longer than the limit is split by the engine's own `split_text`, so the
    chunks the evaluator feeds are the ones the service would produce."""
    chunks: list[str] = []
    current: list[str] = []
    current_tokens = 0
    separator_tokens = counter.count(separator)
    for unit in units:
        unit = unit.strip()
        if not unit:
            continue
        unit_tokens = counter.count(unit)
        if unit_tokens > max_tokens:
            if current:
                chunks.append(separator.join(current))
                current, current_tokens = [], 0
            chunks.extend(split_text(unit, max_tokens, counter))
            continue
        extra = unit_tokens + (separator_tokens if current else 0)
        if current and current_tokens + extra > max_tokens:
            chunks.append(separator.join(current))
            current, current_tokens, extra = [], 0, unit_tokens
        current.append(unit)
        current_tokens += extra
    if current:
        chunks.append(separator.join(current))
    return chunks
