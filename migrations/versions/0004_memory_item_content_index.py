"""memory_items: an index on content, so the ingest worker finds an insert's duplicates without
reading the session's items (a hash index on Postgres, where a B-tree entry is limited to ~2.7 kB)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_memory_items_content", "memory_items", ["content"], postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_memory_items_content", table_name="memory_items")
