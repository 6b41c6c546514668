"""initial schema: tenants, api keys, sessions, chunk log, memory items, audit log, policy registry

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types (a migration must not change when app code does).
_ID = sa.String(length=255)
_SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _at(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _session_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["tenant_id", "session_id"],
        ["sessions.tenant_id", "sessions.id"],
        name=f"fk_{table}_tenant_id_session_id_sessions",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", _ID, nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        _at("created_at"),
        _at("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_api_keys_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_tenant_id", "api_keys", ["tenant_id"])
    op.create_table(
        "sessions",
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("id", _ID, nullable=False),
        sa.Column("core", sa.Text(), nullable=False),
        sa.Column("core_truncated", sa.Boolean(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("next_seq", sa.BigInteger(), nullable=False),
        sa.Column("next_item", sa.BigInteger(), nullable=False),
        _at("ready_at", nullable=True),
        sa.Column("blocked_by_seq", sa.BigInteger(), nullable=True),
        sa.Column("lease_owner", _ID, nullable=True),
        _at("lease_until", nullable=True),
        _at("created_at"),
        _at("updated_at"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_sessions_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_sessions"),
    )
    op.create_index("ix_sessions_ready_at", "sessions", ["ready_at"])
    op.create_table(
        "chunks",
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("session_id", _ID, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        _at("timestamp", nullable=True),
        sa.Column("idempotency_key", _ID, nullable=True),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("metadata", _JSON, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("usage", _JSON, nullable=True),
        sa.Column("policy", _ID, nullable=True),
        sa.Column("model", _ID, nullable=True),
        _at("accepted_at"),
        _at("started_at", nullable=True),
        _at("done_at", nullable=True),
        _at("next_attempt_at", nullable=True),
        _session_fk("chunks"),
        sa.PrimaryKeyConstraint("tenant_id", "session_id", "seq", name="pk_chunks"),
        sa.UniqueConstraint(
            "tenant_id",
            "session_id",
            "idempotency_key",
            "part",
            name="uq_chunks_tenant_id_session_id_idempotency_key_part",
        ),
    )
    op.create_index("ix_chunks_status", "chunks", ["status"])
    op.create_table(
        "memory_items",
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("session_id", _ID, nullable=False),
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.Column("source_seq", sa.BigInteger(), nullable=True),
        _at("occurred_at", nullable=True),
        _session_fk("memory_items"),
        sa.PrimaryKeyConstraint("tenant_id", "session_id", "item_id", name="pk_memory_items"),
    )
    op.create_index(
        "ix_memory_items_tenant_id_session_id_kind_position",
        "memory_items",
        ["tenant_id", "session_id", "kind", "position"],
    )
    op.create_table(
        "operations",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("tenant_id", _ID, nullable=False),
        sa.Column("session_id", _ID, nullable=False),
        sa.Column("chunk_seq", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("policy", _ID, nullable=True),
        sa.Column("model", _ID, nullable=True),
        sa.Column("tool", sa.String(length=64), nullable=False),
        sa.Column("memory_type", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("before", sa.Text(), nullable=True),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        _at("created_at"),
        _session_fk("operations"),
        sa.PrimaryKeyConstraint("id", name="pk_operations"),
    )
    op.create_index("ix_operations_tenant_id_session_id_id", "operations", ["tenant_id", "session_id", "id"])
    op.create_index(
        "ix_operations_tenant_id_session_id_chunk_seq", "operations", ["tenant_id", "session_id", "chunk_seq"]
    )
    op.create_table(
        "policies",
        sa.Column("id", _SERIAL, autoincrement=True, nullable=False),
        sa.Column("name", _ID, nullable=False),
        sa.Column("base_model", _ID, nullable=False),
        sa.Column("adapter_path", sa.Text(), nullable=True),
        sa.Column("metrics", _JSON, nullable=False),
        sa.Column("manifest", _JSON, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_policies"),
        sa.UniqueConstraint("name", name="uq_policies_name"),
    )
    op.create_index(
        "uq_policies_one_active",
        "policies",
        ["active"],
        unique=True,
        postgresql_where=sa.text("active"),
        sqlite_where=sa.text("active"),
    )


def downgrade() -> None:
    for table in ("policies", "operations", "memory_items", "chunks", "sessions", "api_keys", "tenants"):
        op.drop_table(table)
