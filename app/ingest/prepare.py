"""Validate and split an ingest request before anything is written: a bad request changes nothing."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.contracts.bounds import ID_LENGTH, SESSION_ID_PATTERN
from app.errors import BadRequest, PayloadTooLarge
from app.memory import TokenCounter, is_blank, split_text
from app.store.types import as_utc

_SESSION_ID = re.compile(SESSION_ID_PATTERN)


@dataclass
class ChunkIn:
    content: str
    timestamp: datetime | None = None
    idempotency_key: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Piece:
    """One chunk as it goes into the log: an input chunk, or one part of an over-long one."""

    content: str
    timestamp: datetime | None
    idempotency_key: str | None
    part: int
    metadata: dict[str, Any] | None


def validate_session_id(session_id: str, max_length: int) -> None:
    if not 0 < len(session_id) <= max_length:
        raise BadRequest(f"session id must be 1 to {max_length} characters")
    if not _SESSION_ID.fullmatch(session_id):
        raise BadRequest("session id may contain only letters, digits and . _ : -")


def _check_text(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"{what} is not valid UTF-8") from exc
    if "\x00" in value:
        raise BadRequest(f"{what} contains a NUL character")


def _too_many(count: int, max_chunks: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} {count} chunks; the limit is {max_chunks} per request (send the rest in another)",
        {"field": "chunks", "limit": max_chunks},
    )


def prepare(
    chunks: list[ChunkIn],
    *,
    max_chunk_bytes: int,
    max_chunk_tokens: int,
    max_chunks: int,
    counter: TokenCounter,
) -> list[list[Piece]]:
    """One list of pieces per input chunk (several when it is longer than `max_chunk_tokens`); at most
    `max_chunks` pieces in all. CPU-bound on long input: callers run it off the event loop."""
    if not chunks:
        raise BadRequest("no chunks given")
    if len(chunks) > max_chunks:
        raise _too_many(len(chunks), max_chunks, "the request has")
    prepared = []
    total = 0
    for index, chunk in enumerate(chunks):
        what = f"chunk {index}"
        if not isinstance(chunk.content, str):
            raise BadRequest(f"{what}: content must be a string")
        _check_text(chunk.content, what)
        size = len(chunk.content.encode("utf-8"))
        if size > max_chunk_bytes:
            raise PayloadTooLarge(f"{what} has {size} bytes; the limit is {max_chunk_bytes}")
        if is_blank(chunk.content):
            raise BadRequest(f"{what} is empty (nothing visible in it)")
        key = chunk.idempotency_key
        if key is not None:
            if not 0 < len(key) <= ID_LENGTH:
                raise BadRequest(f"{what}: idempotency_key must be 1 to {ID_LENGTH} characters")
            _check_text(key, f"{what}: idempotency_key")
        if chunk.metadata is not None:
            try:
                encoded = json.dumps(chunk.metadata, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise BadRequest(f"{what}: metadata must be a JSON object") from exc
            if "\\u0000" in encoded:  # Postgres JSON cannot hold NUL
                raise BadRequest(f"{what}: metadata contains a NUL character")
        timestamp = as_utc(chunk.timestamp)  # a timestamp without a zone is UTC
        pieces = split_text(chunk.content, max_chunk_tokens, counter)
        total += len(pieces)
        if total > max_chunks:
            raise _too_many(total, max_chunks, "split at the token limit, the request makes at least")
        prepared.append(
            [
                Piece(
                    content=text, timestamp=timestamp, idempotency_key=key, part=part, metadata=chunk.metadata
                )
                for part, text in enumerate(pieces)
            ]
        )
    return prepared
