"""Client CPU per statement, by kind, on the service's own `Database` (SQLAlchemy 2 async, psycopg 3,
Postgres over TCP loopback): what one more or one fewer statement of each kind on a chunk's path
costs the service's thread. Each kind runs `--n` times per round inside one open transaction (so
BEGIN/COMMIT are not in it), except `transaction`, which is a whole write transaction around one
`SELECT 1` (its excess over `core select` is the BEGIN/COMMIT pair and the session set-up). Kinds
run in a shuffled order every round; the figure is the median over all executions of the CPU time
of this thread (`time.thread_time`) around one `await`.

    python -m bench.statement_cost [--rounds 8] [--n 50] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.store import schema
from app.store.database import Database
from app.store.models import Chunk, ChunkStatus, Session
from app.store.sessions import lock_or_create_session
from app.store.types import utcnow
from bench.pg import scratch_database

KEY = ("bench", "s")
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
_ONE = text("SELECT 1")
_CORE = select(Session.version, Session.lease_owner).where(
    Session.tenant_id == bindparam("tenant"), Session.id == bindparam("session")
)
_ORM = (
    select(Session)
    .where(Session.tenant_id == bindparam("tenant"), Session.id == bindparam("session"))
    .with_for_update()
)
_ORM_UPDATE = (
    update(Session)
    .where(Session.tenant_id == bindparam("tenant"), Session.id == bindparam("session"))
    .values(lease_until=bindparam("until"))
    .returning(Session)
)
_CHUNK_UPDATE = (
    update(Chunk)
    .where(Chunk.tenant_id == bindparam("tenant"), Chunk.session_id == bindparam("session"), Chunk.seq == 1)
    .values(attempts=Chunk.attempts + 0)
    .returning(Chunk)
    .execution_options(synchronize_session=False, populate_existing=True)
)
_PARAMS = {"tenant": KEY[0], "session": KEY[1]}


def _kinds() -> dict[str, Callable[[AsyncSession], Awaitable[object]]]:
    async def flush(session: AsyncSession) -> float:
        """Only the flush is timed (the row is loaded first): returns its CPU time."""
        row = (await session.execute(_ORM, _PARAMS)).scalar_one()
        row.updated_at = utcnow()
        started = time.thread_time()
        await session.flush()
        return time.thread_time() - started

    return {
        "notify (text SELECT pg_notify)": lambda s: s.execute(_NOTIFY, {"channel": "bench", "payload": "x"}),
        "core select (2 columns)": lambda s: s.execute(_CORE, _PARAMS),
        "orm select session FOR UPDATE": lambda s: s.execute(_ORM, _PARAMS),
        "orm update session RETURNING": lambda s: s.execute(_ORM_UPDATE, {**_PARAMS, "until": utcnow()}),
        "orm update chunk RETURNING": lambda s: s.execute(_CHUNK_UPDATE, _PARAMS),
        "flushed UPDATE of one changed attribute": flush,
    }


async def measure(url: str, rounds: int, n: int) -> dict[str, list[float]]:
    db = Database(url)
    await schema.upgrade(db)
    async with db.write() as session:
        await lock_or_create_session(session, KEY, utcnow())
        await session.execute(
            Chunk.__table__.insert(),  # type: ignore[attr-defined]
            {
                "tenant_id": KEY[0],
                "session_id": KEY[1],
                "seq": 1,
                "content": "x",
                "part": 0,
                "status": ChunkStatus.PENDING,
                "attempts": 0,
                "accepted_at": utcnow(),
            },
        )
    kinds = _kinds()
    costs: dict[str, list[float]] = {name: [] for name in [*kinds, "transaction (BEGIN, SELECT 1, COMMIT)"]}
    try:
        for _ in range(rounds):
            order = list(costs)
            random.shuffle(order)
            for name in order:
                if name.startswith("transaction"):
                    for _ in range(n):
                        started = time.thread_time()
                        async with db.write() as session:
                            await session.execute(_ONE)
                        costs[name].append(time.thread_time() - started)
                    continue
                run = kinds[name]
                async with db.write() as session:
                    for _ in range(n):
                        started = time.thread_time()
                        result = await run(session)
                        spent = time.thread_time() - started
                        costs[name].append(result if isinstance(result, float) else spent)
    finally:
        await db.dispose()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with scratch_database() as (url, _):
        costs = asyncio.run(measure(url, args.rounds, args.n))
    summary = {}
    for name, values in costs.items():
        p50, p90 = statistics.median(values) * 1000, statistics.quantiles(values, n=10)[-1] * 1000
        summary[name] = {"p50_ms": p50, "p90_ms": p90, "n": len(values)}
        print(f"  {name:<42} CPU p50 {p50:6.3f} ms  p90 {p90:6.3f} ms  (n={len(values)})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
