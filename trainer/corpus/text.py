"""Plain text files as policy chunks: paragraphs packed into chunks of at most N tokens (`split_text`)."""

from __future__ import annotations

from pathlib import Path

from app.memory import TokenCounter, split_text


def read_text_chunks(path: str | Path, max_tokens: int, counter: TokenCounter) -> list[str]:
    return split_text(Path(path).read_text(encoding="utf-8"), max_tokens, counter)
