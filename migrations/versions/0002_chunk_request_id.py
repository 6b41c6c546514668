"""chunks.request_id: the X-Request-ID of the ingest request that accepted the chunk

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: older chunks simply have none; ADD COLUMN works on SQLite as it is.
    op.add_column("chunks", sa.Column("request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chunks") as batch:  # SQLite cannot drop a column in place
        batch.drop_column("request_id")
