"""Tables (ARCHITECTURE §7). Every session-owned row carries `tenant_id`: queries are scoped by tenant
first, so another tenant's session id simply matches nothing."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import SQLCoreOperations
from sqlalchemy.sql.functions import FunctionElement

from app.contracts.bounds import ID_LENGTH
from app.store.types import BigIntId, JSONType, UTCDateTime

# Deterministic constraint names, so migrations can address them on both dialects.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the whole key
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings, never enough to authenticate
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Session(Base):
    __tablename__ = "sessions"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    core: Mapped[str] = mapped_column(Text, default="")
    core_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    next_seq: Mapped[int] = mapped_column(BigInteger, default=1)
    next_item: Mapped[int] = mapped_column(BigInteger, default=0)
    # Work queue: the session is claimable when ready_at <= now and its lease is free or expired.
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    blocked_by_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


_SESSION_FK = (("tenant_id", "session_id"), ("sessions.tenant_id", "sessions.id"))


class ChunkStatus(StrEnum):
    """A chunk's place in the queue; every transition is in `app/ingest/queue.py`."""

    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        ForeignKeyConstraint(*_SESSION_FK, ondelete="CASCADE"),
        # NULL keys never collide (both dialects), so chunks without a key are unconstrained.
        UniqueConstraint("tenant_id", "session_id", "idempotency_key", "part"),
        Index(None, "status"),
    )

    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    content: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True)  # X-Request-ID of its ingest
    part: Mapped[int] = mapped_column(Integer, default=0)  # index of this piece when one input was split
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType, nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # a ChunkStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    policy: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    model: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class MemoryItem(Base):
    __tablename__ = "memory_items"
    __table_args__ = (
        ForeignKeyConstraint(*_SESSION_FK, ondelete="CASCADE"),
        Index(None, "tenant_id", "session_id", "kind", "position"),
        Index(None, "tenant_id", "session_id", "version"),  # what changed since a version
    )

    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(32), primary_key=True)  # ids are unique across kinds
    kind: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(BigInteger)  # list order within the kind
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cues: Mapped[str] = mapped_column(Text, default="", server_default="")  # index-only words (`Item.cues`)
    # The session version that last wrote the row: a reader holding the memory at version v reads
    # only the rows above v (and `MemoryRemoval`s above v) to bring it up to date.
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ContentDigest(FunctionElement[str]):
    """What the content index holds of a content: its MD5 on Postgres, where a B-tree entry is limited
    to ~2.7 kB and contents may be longer; the content itself elsewhere (SQLite has neither)."""

    type = Text()
    inherit_cache = True
    name = "content_digest"


@compiles(ContentDigest)
def _the_content(element: ContentDigest, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(ContentDigest, "postgresql")
def _md5(element: ContentDigest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"md5({compiler.process(element.clauses, **kw)})"


def probed(key: SQLCoreOperations[str]) -> ColumnElement[str]:
    """A column of the session's key as the lookups of named items compare it (`tenant_id || ''`: the
    same value, which no index on the plain column can use; see the indexes below)."""
    return key.concat(literal_column("''"))


# The lookups of named items (the ingest worker's commit reads and writes the items a reply names, by
# id and by content). Without statistics (after a bulk import or a restore, until the table is
# analyzed) Postgres takes `tenant_id = … AND session_id = …` for one row, so every index that leads
# with the session ties with the primary key and the planner takes the smallest (the version index),
# reading all of the session's items to find the named ones; with the session alone hidden, the tenant
# (all of the table, with one tenant) still looked selective. These lookups compare the session's key
# `probed` instead, and each has an index that leads with what it names: no other index bounds any of
# a lookup's conditions, so each lookup probes its own index whatever the planner knows.
Index(
    "ix_memory_items_item_probe",
    MemoryItem.item_id,
    probed(MemoryItem.tenant_id),
    probed(MemoryItem.session_id),
)
Index(
    "ix_memory_items_content_probe",
    ContentDigest(MemoryItem.content),
    MemoryItem.kind,
    probed(MemoryItem.tenant_id),
    probed(MemoryItem.session_id),
)


class MemoryRemoval(Base):
    """An item deleted from a session's memory, at the version that deleted it (item ids are never
    reused, so one row per item)."""

    __tablename__ = "memory_removals"
    __table_args__ = (ForeignKeyConstraint(*_SESSION_FK, ondelete="CASCADE"),)

    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class OperationLog(Base):
    """The audit log: every applied (or rejected) memory operation, by whom, with before/after."""

    __tablename__ = "operations"
    __table_args__ = (
        ForeignKeyConstraint(*_SESSION_FK, ondelete="CASCADE"),
        Index(None, "tenant_id", "session_id", "id"),
        Index(None, "tenant_id", "session_id", "chunk_seq"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    session_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    chunk_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    actor: Mapped[str] = mapped_column(String(16))  # policy | user | import
    policy: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    model: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    tool: Mapped[str] = mapped_column(String(64))
    memory_type: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    before: Mapped[str | None] = mapped_column(Text, nullable=True)
    after: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Policy(Base):
    """The policy registry; the one `active` row names the model the workers call."""

    __tablename__ = "policies"
    __table_args__ = (
        # At most one active row; the service seeds one so there is exactly one.
        Index(
            "uq_policies_one_active",
            "active",
            unique=True,
            postgresql_where=text("active"),
            sqlite_where=text("active"),
        ),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(ID_LENGTH), unique=True)
    base_model: Mapped[str] = mapped_column(String(ID_LENGTH))
    adapter_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PolicyActivation(Base):
    """One switch of the active policy (who, when, from → to): what rollback reads, in order."""

    __tablename__ = "policy_activations"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(16))  # switch | rollback
    from_name: Mapped[str | None] = mapped_column(String(ID_LENGTH), nullable=True)
    to_name: Mapped[str] = mapped_column(String(ID_LENGTH))
    actor: Mapped[str] = mapped_column(String(ID_LENGTH))  # the admin key's tenant
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The publish canary's result the switch was made on (schemas.CanaryReport); None: none ran.
    canary: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
