"""Round trips to Postgres per chunk on P1's loop (`bench.service_overhead`: the service as in
production, the instant scripted policy server, one `ingest(wait=True)` at a time), counted on the
client: every statement SQLAlchemy sends (`before_cursor_execute`) and every command psycopg sends
on its own (BEGIN, COMMIT, ROLLBACK). The counts are deterministic up to the periodic backlog count
(one statement per poll interval), so a handful of chunks is enough.

`--burst N` sends N chunks per request to one session (the shape of a busy session), so that the
chunks after the first are started inside the previous chunk's commit where the code does that.
`--claimers N` runs N claim loops (`MEMALPHA_WORKERS`, 2 by default in production; 1 otherwise, as
in `bench.service_overhead`): every claim loop is woken by a new chunk, and those that find it taken
claim nothing, at a round trip or more each.

    python -m bench.round_trips --data-dir ../shared/data [--chunks 10] [--warmup 3] [--size 1000] [--burst 1]
        [--claimers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import event

from app.service import ChunkIn
from bench.pg import scratch_database
from bench.service_overhead import TENANT, import_payload, start_service
from bench.text_pool import load_pool
from tests.scripted_llm import ScriptedLLM


def _kind(statement: str) -> str:
    """`SELECT sessions`, `UPDATE chunks`, …: the verb and the first table, for the breakdown."""
    text = " ".join(statement.split())
    verb = text.split(" ", 1)[0].upper()
    table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", text, re.IGNORECASE)
    return f"{verb} {table[1] if table else ''}".strip()


class Counts:
    def __init__(self) -> None:
        self.on = False
        self.kinds: Counter[str] = Counter()

    def add(self, kind: str) -> None:
        if self.on:
            self.kinds[kind] += 1


@contextmanager
def _count_commands(counts: Counts) -> Iterator[None]:
    """psycopg sends BEGIN/COMMIT/ROLLBACK through `_exec_command`, not through a cursor."""
    original = psycopg.AsyncConnection._exec_command  # type: ignore[attr-defined]

    def counted(self: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        raw = command if isinstance(command, bytes | str) else command.as_string(self)
        text = raw.decode() if isinstance(raw, bytes) else raw
        counts.add(text.split()[0].upper())
        return original(self, command, *args, **kwargs)

    psycopg.AsyncConnection._exec_command = counted  # type: ignore[attr-defined]
    try:
        yield
    finally:
        psycopg.AsyncConnection._exec_command = original  # type: ignore[attr-defined]


async def measure(args: argparse.Namespace, url: str, llm: ScriptedLLM) -> dict[str, Any]:
    counts = Counts()
    with _count_commands(counts):
        service, _ = await start_service(url, llm, claimers=args.claimers)
        event.listen(
            service.db.engine.sync_engine,
            "before_cursor_execute",
            lambda _conn, _cursor, statement, *_: counts.add(_kind(statement)),
        )
        pool = load_pool(args.data_dir)
        texts = iter(pool.paragraphs[::-1])
        try:
            await service.exchange.import_session(TENANT, "s", import_payload(pool, args.size))
            for round_ in range(args.warmup + args.chunks):
                counts.on = round_ >= args.warmup
                chunks = [ChunkIn(content=f"{next(texts)} (chunk {round_}.{n})") for n in range(args.burst)]
                outcome = await service.ingestion.ingest(TENANT, "s", chunks, wait=True)
                if any(chunk.status != "done" for chunk in outcome.chunks):
                    raise RuntimeError(f"chunk not done: {outcome}")
            counts.on = False
        finally:
            await service.stop()
    processed = args.chunks * args.burst
    per_chunk = {kind: n / processed for kind, n in sorted(counts.kinds.items())}
    commands = sum(n for kind, n in per_chunk.items() if kind in ("BEGIN", "COMMIT", "ROLLBACK"))
    return {
        "chunks": processed,
        "burst": args.burst,
        "claimers": args.claimers,
        "size": args.size,
        "per_chunk": per_chunk,
        "statements": sum(per_chunk.values()) - commands,
        "begin_commit_rollback": commands,
        "total": sum(per_chunk.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--chunks", type=int, default=10, help="counted requests")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", type=int, default=1_000, help="memory items preloaded")
    parser.add_argument("--burst", type=int, default=1, help="chunks per request")
    parser.add_argument("--claimers", type=int, default=1, help="claim loops in the service")
    parser.add_argument("--json", type=Path, help="write the counts here")
    args = parser.parse_args()
    with scratch_database() as (url, _), ScriptedLLM() as llm:
        result = asyncio.run(measure(args, url, llm))
    for kind, n in result["per_chunk"].items():
        print(f"  {kind:<24} {n:6.2f}")
    print(
        f"per chunk ({result['chunks']} chunks, {args.burst} per request, {args.size:,} items, "
        f"{args.claimers} claim loop(s)): "
        f"{result['statements']:.2f} statements + {result['begin_commit_rollback']:.2f} BEGIN/COMMIT/ROLLBACK "
        f"= {result['total']:.2f} round trips"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
