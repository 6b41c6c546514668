"""NOTIFY from triggers on `chunks` (PostgreSQL only): the `work` and `done` notifications the ingest
path and the workers used to send with a statement of their own (one round trip each per chunk)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The channel and payloads `app/ingest/wakeups.py` listens for: fields separated by U+001F.
# `work` once per INSERT statement (a batch of accepted chunks is one wake-up; Postgres also folds
# identical notifications of one transaction into one), `done` per chunk reaching a final status.
_UPGRADE = [
    """
    CREATE FUNCTION memalpha_notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('memalpha_ingest', 'work');
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER chunks_notify_work AFTER INSERT ON chunks
    FOR EACH STATEMENT EXECUTE FUNCTION memalpha_notify_work()
    """,
    """
    CREATE FUNCTION memalpha_notify_done() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify(
            'memalpha_ingest',
            concat_ws(chr(31), 'done', NEW.tenant_id, NEW.session_id, NEW.seq::text, NEW.status)
        );
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER chunks_notify_done AFTER UPDATE OF status ON chunks
    FOR EACH ROW WHEN (NEW.status IN ('done', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION memalpha_notify_done()
    """,
]
_DOWNGRADE = [
    "DROP TRIGGER chunks_notify_done ON chunks",
    "DROP FUNCTION memalpha_notify_done()",
    "DROP TRIGGER chunks_notify_work ON chunks",
    "DROP FUNCTION memalpha_notify_work()",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # SQLite: one process, in-process wake-ups only
        for statement in _UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in _DOWNGRADE:
            op.execute(statement)
