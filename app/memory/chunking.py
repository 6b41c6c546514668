"""Split over-long input into chunks of at most `max_tokens`, at paragraph, then sentence, then word
boundaries (a single word longer than the limit is cut where it must be).

Linear time: every character is counted a bounded number of times. Long sentences are cut inside a
window a little larger than one chunk (never by recounting the remaining text), and pieces are packed
by running token totals (never by recounting the growing chunk); a packed chunk is checked once, since
a model tokenizer's counts need not add up exactly across a join."""

from __future__ import annotations

import re

from app.memory.tokens import TokenCounter, truncate_at_word

_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?。！？])\s+")
# First window for cutting a long sentence, in characters per allowed token; it doubles until it holds
# more than one chunk's worth of tokens, so a cut costs O(chunk), not O(remaining text).
_WINDOW_CHARS_PER_TOKEN = 8

Piece = tuple[str, str, int]  # text, separator before the next piece, tokens of the text


def split_text(text: str, max_tokens: int, counter: TokenCounter) -> list[str]:
    if max_tokens <= 0:
        raise ValueError("max_tokens must be positive")
    text = text.strip()
    if not text:
        return []
    if counter.count(text) <= max_tokens:
        return [text]
    return _pack(_pieces(text, max_tokens, counter), max_tokens, counter)


def _pieces(text: str, max_tokens: int, counter: TokenCounter) -> list[Piece]:
    """Pieces within the limit, in order."""
    out: list[Piece] = []
    for paragraph in (p.strip() for p in _PARAGRAPHS.split(text)):
        if not paragraph:
            continue
        tokens = counter.count(paragraph)
        if tokens <= max_tokens:
            out.append((paragraph, "\n\n", tokens))
            continue
        for sentence in _SENTENCES.split(paragraph):
            if sentence:
                out.extend((part, " ", n) for part, n in _split_long(sentence, max_tokens, counter))
        out[-1] = (out[-1][0], "\n\n", out[-1][2])
    return out


def _split_long(sentence: str, max_tokens: int, counter: TokenCounter) -> list[tuple[str, int]]:
    """(part, tokens) pairs of at most `max_tokens` each."""
    parts: list[tuple[str, int]] = []
    start = 0
    width = max(64, _WINDOW_CHARS_PER_TOKEN * max_tokens)
    while start < len(sentence):
        window = sentence[start : start + width]
        tokens = counter.count(window)
        at_end = start + width >= len(sentence)
        if at_end and tokens <= max_tokens:
            parts.append((window, tokens))  # the rest fits
            break
        if not at_end and tokens <= max_tokens + 1:
            # Too few tokens in the window to be sure where the limit falls (its last token may be cut).
            width *= 2
            continue
        head = truncate_at_word(window, max_tokens, counter)
        if not head:  # one word longer than the limit
            head = window[: counter.prefix_end(window, max_tokens)]
        parts.append((head, counter.count(head)))
        start += len(head)
        while start < len(sentence) and sentence[start].isspace():
            start += 1
    return parts


def _pack(pieces: list[Piece], max_tokens: int, counter: TokenCounter) -> list[str]:
    groups: list[list[Piece]] = []
    current: list[Piece] = []
    total = 0
    for piece in pieces:
        if current and total + piece[2] > max_tokens:
            groups.append(current)
            current, total = [], 0
        current.append(piece)
        total += piece[2]
    if current:
        groups.append(current)
    chunks: list[str] = []
    for group in groups:
        chunk = _join(group)
        if len(group) > 1 and counter.count(chunk) > max_tokens:
            chunks.extend(_pack_exact(group, max_tokens, counter))
        elif chunk:
            chunks.append(chunk)
    return chunks


def _join(group: list[Piece]) -> str:
    return "".join(f"{text}{separator}" for text, separator, _ in group).strip()


def _pack_exact(group: list[Piece], max_tokens: int, counter: TokenCounter) -> list[str]:
    """Packing by recounting: only for the rare group whose tokens did not add up (at most one chunk's
    worth of pieces, so its cost stays bounded)."""
    chunks: list[str] = []
    current: list[Piece] = []
    for piece in group:
        if current and counter.count(_join([*current, piece])) > max_tokens:
            chunks.append(_join(current))
            current = []
        current.append(piece)
    if current:
        chunks.append(_join(current))
    return chunks
