"""The first search after a write: the BM25 index of the new memory version built from scratch (a new
`Retriever`, what every version cost before) vs by the retriever that indexed the previous version
(which reuses the analysed terms of unchanged items). In-process, no database.

    python -m bench.index_versions --data-dir ../shared/data [--sizes 10000,100000] [--writes 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from app.memory import Item
from app.retrieval import Retriever
from bench.text_pool import load_pool

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--sizes", type=lambda text: tuple(int(n) for n in text.split(",")), default=(10_000, 100_000)
    )
    parser.add_argument("--writes", type=int, default=5)
    args = parser.parse_args()
    pool = load_pool(args.data_dir)
    print(f"lucene scorer; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for size in args.sizes:
        state = pool.memory(size)
        kept = Retriever(scorer="lucene")
        kept.search(state, "warm up", 20, key="s")
        rebuilt: list[float] = []
        reused: list[float] = []
        for n in range(args.writes):  # one insert (a new version), then the same question both ways
            state.semantic.append(Item(f"new{n}", pool.sentences[n], NOW, NOW))
            state.version += 1
            question = pool.questions[n]
            started = time.perf_counter()
            Retriever(scorer="lucene").search(state, question, 20, key="s")
            rebuilt.append(time.perf_counter() - started)
            started = time.perf_counter()
            kept.search(state, question, 20, key="s")
            reused.append(time.perf_counter() - started)
        scratch, kept_ms = statistics.median(rebuilt) * 1000, statistics.median(reused) * 1000
        print(
            f"  {size:>7,} items: first search after a write: rebuilt {scratch:8.0f} ms | reusing terms "
            f"{kept_ms:7.0f} ms | {scratch / kept_ms:.1f}x (medians of {args.writes}, alternating)"
        )


if __name__ == "__main__":
    main()
