"""A scratch PostgreSQL database per benchmark run (created, migrated by the service, dropped)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN_URL = os.environ.get("MEMALPHA_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_database(admin_url: str = ADMIN_URL) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, libpq URL) of a fresh database, dropped on exit."""
    name = f"memalpha_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            info = psycopg.conninfo.conninfo_to_dict(admin_url)
            user, host, port = (
                info.get("user", "postgres"),
                info.get("host", "127.0.0.1"),
                info.get("port", 5432),
            )
            yield (
                f"postgresql+psycopg://{user}@{host}:{port}/{name}",
                psycopg.conninfo.make_conninfo(admin_url, dbname=name),
            )
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
