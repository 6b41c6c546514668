"""policy_activations.canary: the publish canary's result that a switch was made on (null: none ran)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column("policy_activations", sa.Column("canary", _JSON, nullable=True))


def downgrade() -> None:
    # batch: SQLite before 3.35 cannot drop a column in place
    with op.batch_alter_table("policy_activations") as batch:
        batch.drop_column("canary")
