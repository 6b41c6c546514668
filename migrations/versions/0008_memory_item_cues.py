"""memory_items.cues: index-only words of an item (what a search may match it by, never shown in an
answer context)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing items have no cues: "" indexes exactly what they indexed before.
    op.add_column("memory_items", sa.Column("cues", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("memory_items") as batch:  # SQLite before 3.35 cannot drop a column in place
        batch.drop_column("cues")
