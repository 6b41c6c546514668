"""memory_items: an index per lookup of named items (by id, by content) that no other index ties with
when the planner has no statistics; the hash index on content, which they replace, dropped

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# `app.store.models.probed` and `ContentDigest`, as the models render them.
_KEY = (sa.text("(tenant_id || '')"), sa.text("(session_id || '')"))


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_index("ix_memory_items_content", table_name="memory_items")
    op.create_index("ix_memory_items_item_probe", "memory_items", ["item_id", *_KEY])
    op.create_index(
        "ix_memory_items_content_probe",
        "memory_items",
        [sa.text("md5(content)") if postgres else "content", "kind", *_KEY],
    )


def downgrade() -> None:
    op.drop_index("ix_memory_items_content_probe", table_name="memory_items")
    op.drop_index("ix_memory_items_item_probe", table_name="memory_items")
    op.create_index("ix_memory_items_content", "memory_items", ["content"], postgresql_using="hash")
