"""Split over-long input into chunks of at most `max_tokens`, at paragraph, then sentence, then word
boundaries (a single word longer than the limit is cut where it must be)."""

from __future__ import annotations

import re

from app.memory.tokens import TokenCounter, truncate_at_word

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?。！？])\s+")


def split_text(text: str, max_tokens: int, counter: TokenCounter) -> list[str]:
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    text = text.strip()
    if not text:
        return []
    if counter.count(text) <= max_tokens:
        return [text]
    pieces = _pieces(text, max_tokens, counter)
    return _pack(pieces, max_tokens, counter)


def _pieces(text: str, max_tokens: int, counter: TokenCounter) -> list[tuple[str, str]]:
    """(piece, separator-before-next) pairs, each piece within the limit."""
    out: list[tuple[str, str]] = []
    for paragraph in (p.strip() for p in _PARAGRAPHS.split(text)):
        if not paragraph:
            continue
        sentences = [s for s in _SENTENCES.split(paragraph) if s] if counter.count(paragraph) > max_tokens else [paragraph]
        for sentence in sentences:
            out.extend((part, " ") for part in _split_long(sentence, max_tokens, counter))
        out[-1] = (out[-1][0], "\n\n")
    return out


def _split_long(sentence: str, max_tokens: int, counter: TokenCounter) -> list[str]:
    parts = []
    rest = sentence
    while counter.count(rest) > max_tokens:
        head = truncate_at_word(rest, max_tokens, counter)
        if not head:  # one word longer than the limit
            head = rest[: counter.prefix_end(rest, max_tokens)]
        parts.append(head)
        rest = rest[len(head):].lstrip()
    if rest:
        parts.append(rest)
    return parts


def _pack(pieces: list[tuple[str, str]], max_tokens: int, counter: TokenCounter) -> list[str]:
    chunks: list[str] = []
    current = ""
    for piece, separator in pieces:
        candidate = f"{current}{piece}" if current else piece
        if current and counter.count(candidate) > max_tokens:
            chunks.append(current.strip())
            candidate = piece
        current = candidate + separator
    if current.strip():
        chunks.append(current.strip())
    return chunks
