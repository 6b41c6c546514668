"""memory_items.version and memory_removals: what changed in a memory since a version, so a cached
memory is brought up to date by reading the changed items instead of every item

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows get 0: older than any version a reader of this code can hold in its cache.
    op.add_column("memory_items", sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_index(
        "ix_memory_items_tenant_id_session_id_version", "memory_items", ["tenant_id", "session_id", "version"]
    )
    op.create_table(
        "memory_removals",
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id", "session_id"],
            ["sessions.tenant_id", "sessions.id"],
            name="fk_memory_removals_tenant_id_session_id_sessions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "session_id", "item_id", name="pk_memory_removals"),
    )


def downgrade() -> None:
    op.drop_table("memory_removals")
    op.drop_index("ix_memory_items_tenant_id_session_id_version", table_name="memory_items")
    with op.batch_alter_table("memory_items") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("version")
