"""The portable JSON of a session as an import takes it (`POST /sessions/{id}/import`): every field is
validated against what the columns hold and unknown fields are refused, so an import cannot lose data.
The API describes the body with these models; the store maps them to rows (`app/store/exchange.py`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.contracts.bounds import ID_LENGTH, BigCount, BigId, SmallCount, Timestamp

FORMAT = "memalpha.session.v1"


def _storable(value: str) -> str:
    # Postgres text cannot hold NUL; lone surrogates are not UTF-8.
    if "\x00" in value:
        raise ValueError("text contains a NUL character")
    value.encode("utf-8")
    return value


Text = Annotated[str, AfterValidator(_storable)]


# Ids are looked up in their normal form (`[K3X9]` means `k3x9`, see `normalise_id`): an id in any other
# form could never be updated or deleted. Ours are base 36; foreign ones may add `. _ : -`.
_ITEM_ID = r"^[0-9a-z][0-9a-z._:-]*$"


class Strict(BaseModel):
    # A misspelt field would silently lose its data; a number in a string is not a number.
    model_config = ConfigDict(extra="forbid", strict=True)


class ItemIn(Strict):
    # (The pattern is repeated for the JSON schema, which drops it after `Text`'s validator.)
    id: Annotated[
        Text, Field(min_length=1, max_length=32, pattern=_ITEM_ID, json_schema_extra={"pattern": _ITEM_ID})
    ]
    content: Annotated[Text, Field(min_length=1)]
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    source_seq: BigCount | None = None
    occurred_at: Timestamp | None = None
    cues: Text = ""  # index-only words; absent in exports made before items had them


class MemoryIn(Strict):
    core: Text = ""
    core_truncated: bool = False
    version: BigCount = 0
    next_item: BigCount = 0
    semantic: list[ItemIn] = []
    episodic: list[ItemIn] = []


class ChunkRecordIn(Strict):
    seq: BigId
    content: Annotated[Text, Field(min_length=1)]
    status: Literal["pending", "processing", "done", "failed"] = "done"
    timestamp: Timestamp | None = None
    idempotency_key: Annotated[Text, Field(min_length=1, max_length=ID_LENGTH)] | None = None
    request_id: Annotated[Text, Field(max_length=128)] | None = None
    part: SmallCount = 0
    metadata: dict[str, Any] | None = None
    attempts: SmallCount = 0
    error: Text | None = None
    usage: dict[str, Any] | None = None
    policy: Annotated[Text, Field(max_length=ID_LENGTH)] | None = None
    model: Annotated[Text, Field(max_length=ID_LENGTH)] | None = None
    accepted_at: Timestamp | None = None
    started_at: Timestamp | None = None
    done_at: Timestamp | None = None
    next_attempt_at: Timestamp | None = None  # exported; a pending chunk is due at once here


class OperationIn(Strict):
    """One audit-log entry as `GET /sessions/{id}/operations` and the export show it."""

    id: BigId | None = None  # the source's id; entries get new ids here, in the same order
    at: Timestamp
    actor: Literal["policy", "user", "import"]
    policy: Annotated[Text, Field(max_length=ID_LENGTH)] | None = None
    model: Annotated[Text, Field(max_length=ID_LENGTH)] | None = None
    chunk_seq: BigId | None = None
    tool: Annotated[Text, Field(max_length=64)]
    memory_type: Annotated[Text, Field(max_length=64)]
    memory_id: Annotated[Text, Field(max_length=32)] | None = None
    status: Literal["ok", "skipped", "error"]
    before: Text | None = None
    after: Text | None = None
    error: Text | None = None
    truncated: bool = False


class SessionImport(Strict):
    format: Literal["memalpha.session.v1"]
    session_id: Text | None = None  # where it was exported from; the import target is the URL's
    exported_at: Timestamp | None = None
    memory: MemoryIn
    chunks: list[ChunkRecordIn] | None = None
    operations: list[OperationIn] | None = None
