"""Buffers and plans of the worker's commit statements on Postgres, without and with the planner's
statistics: the read of the items a reply names (`bound_targets`: 2 ids, 3 contents of which 1 is
stored; and `target_query`, the same read of the locked commit) and the write of a chunk's item changes (`changes_ctes`: 1 insert, 1 edit, 1 delete; rolled
back), over a session of `size` items beside another session of as many. "Without" is right after
the bulk insert (autovacuum held off, as in the minute after an import); "with" after `ANALYZE`.
Each statement runs 3 times under `EXPLAIN (ANALYZE, BUFFERS)`; the last run's shared buffers (hit +
read, the whole plan) are printed with the scans of `memory_items` (node, index).

    python -m bench.target_plans [--sizes 1000 10000] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, bindparam, literal, select, text

from app.memory import Item, MemoryKind
from app.store import schema
from app.store.database import Database
from app.store.memory import (
    EDITED_COLUMNS,
    ItemChanges,
    bound_target_params,
    bound_targets,
    changes_ctes,
    changes_json,
    insert_items,
    item_row,
    target_filter,
    target_query,
)
from app.store.sessions import lock_or_create_session
from app.store.types import utcnow
from bench.pg import scratch_database
from tests.explain import Explain, item_scans

TENANT = "bench"
_KEY = bindparam("tenant"), bindparam("session")
_READ = bound_targets(*_KEY)
_WRITE = select(literal(1)).add_cte(*changes_ctes(select(literal(1)).exists(), *_KEY))


def _content(n: int) -> str:
    return f"fact number {n}: the user said something worth remembering about topic {n % 97}"


def _targets(size: int) -> tuple[set[str], set[tuple[MemoryKind, str]]]:
    ids = {f"m{size // 3}", f"m{size - 5}"}  # an update and a delete of older items
    return ids, {
        (MemoryKind.SEMANTIC, _content(size // 2)),
        *((MemoryKind.SEMANTIC, f"new {n}") for n in (1, 2)),
    }


def _params(size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    at = utcnow()
    key = (TENANT, "s")
    ids, contents = _targets(size)
    edited = item_row(key, MemoryKind.SEMANTIC, Item(f"m{size // 3}", "edited", at, at), size // 3, 2)
    changes = ItemChanges(
        fresh=[item_row(key, MemoryKind.SEMANTIC, Item(f"m{size + 1}", "new 1", at, at), size + 1, 2)],
        edited=[{name: edited[name] for name in ("tenant_id", "session_id", "item_id", *EDITED_COLUMNS)}],
        gone=[{"tenant_id": TENANT, "session_id": "s", "item_id": f"m{size - 5}", "version": 2}],
    )
    of_session = {"tenant": TENANT, "session": "s"}
    return of_session | bound_target_params(ids, contents), of_session | changes_json(changes)


async def _explain(db: Database, statement: Executable, params: dict[str, Any]) -> dict[str, Any]:
    for _ in range(3):  # each run rolled back: the write's changes apply to the same rows every time
        async with db.write_connection() as connection:
            explained = await connection.execute(Explain(statement, "ANALYZE, BUFFERS"), params)
            plan = explained.scalar_one()[0]["Plan"]
            await connection.rollback()
    # The write's data-modifying CTEs, which its SELECT does not read, count beside the top node.
    counted = [
        plan,
        *(node for node in plan.get("Plans", []) if node.get("Subplan Name", "").startswith("CTE")),
    ]
    return {
        "buffers": sum(node["Shared Hit Blocks"] + node["Shared Read Blocks"] for node in counted),
        "scans": [f"{node} {index}".strip() for node, index, _ in item_scans(plan)],
    }


async def measure(url: str, size: int) -> dict[str, Any]:
    db = Database(url)
    await schema.upgrade(db)
    try:
        async with db.write() as session:
            for name in ("s", "other"):
                await lock_or_create_session(session, (TENANT, name), utcnow())
        async with db.write_connection() as connection:
            await connection.execute(text("ALTER TABLE memory_items SET (autovacuum_enabled = false)"))
            at = utcnow()
            for name in ("s", "other"):
                await insert_items(
                    connection,
                    [
                        item_row(
                            (TENANT, name), MemoryKind.SEMANTIC, Item(f"m{n}", _content(n), at, at), n, 1
                        )
                        for n in range(size)
                    ],
                )
        read, write = _params(size)
        wanted = target_filter(*_targets(size))
        assert wanted is not None
        locked = target_query((TENANT, "s"), wanted)
        out: dict[str, Any] = {}
        for statistics in ("without", "with"):
            if statistics == "with":
                async with db.write_connection() as connection:
                    await connection.execute(text("ANALYZE memory_items"))
            out[f"read, {statistics} statistics"] = await _explain(db, _READ, read)
            out[f"locked read, {statistics} statistics"] = await _explain(db, locked, {})
            out[f"write, {statistics} statistics"] = await _explain(db, _WRITE, write)
        return out
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for size in args.sizes:
        with scratch_database() as (url, _):
            results[size] = asyncio.run(measure(url, size))
        for name, result in results[size].items():
            print(
                f"  {size:>6} items  {name:<33} buffers {result['buffers']:>5}  {', '.join(result['scans'])}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
