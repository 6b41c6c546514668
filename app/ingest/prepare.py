"""Validate and split an ingest request before anything is written: a bad request changes nothing."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.errors import BadRequest, PayloadTooLarge
from app.memory import TokenCounter, split_text
from app.store.models import ID_LENGTH
from app.store.types import as_utc

_SESSION_ID = re.compile(r"[A-Za-z0-9._:-]+")


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


def prepare(
    chunks: list[ChunkIn], *, max_chunk_bytes: int, max_chunk_tokens: int, counter: TokenCounter
) -> list[list[Piece]]:
    """One list of pieces per input chunk (several when it is longer than `max_chunk_tokens`)."""
    if not chunks:
        raise BadRequest("no chunks given")
    prepared = []
    for index, chunk in enumerate(chunks):
        what = f"chunk {index}"
        if not isinstance(chunk.content, str):
            raise BadRequest(f"{what}: content must be a string")
        _check_text(chunk.content, what)
        size = len(chunk.content.encode("utf-8"))
        if size > max_chunk_bytes:
            raise PayloadTooLarge(f"{what} has {size} bytes; the limit is {max_chunk_bytes}")
        if not chunk.content.strip():
            raise BadRequest(f"{what} is empty")
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
        prepared.append(
            [
                Piece(
                    content=text, timestamp=timestamp, idempotency_key=key, part=part, metadata=chunk.metadata
                )
                for part, text in enumerate(pieces)
            ]
        )
    return prepared
