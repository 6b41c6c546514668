"""BM25 query time: our cached index vs rebuilding the index for every question (what the upstream QA
server does), at 1k / 10k / 100k memory items (real sentences, real SQuAD questions).

Three ways, side by side, per memory size (top-20 per kind over semantic + episodic, as the answer path):
- cached: `app.retrieval.Retriever` (index built once per memory version, reused by every question);
- rebuild (rank-bm25): tokenise + `BM25Okapi` + scores per question — the upstream behaviour;
- rebuild (ours): tokenise + our `BM25Index` per question — separates the caching gain from the index's.
It also checks that the cached top-k equals rank-bm25's (same ids, same order).

    python -m bench.bm25_cache --data-dir ../shared/data [--sizes 1000,10000,100000] [--queries 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

from app.memory import LIST_KINDS, MemoryKind, MemoryState
from app.retrieval import BM25Index, Retriever, bm25_tokens
from bench.text_pool import load_pool

K = 20


def rebuild_rank_bm25(state: MemoryState, question: str) -> dict[MemoryKind, list[str]]:
    words = bm25_tokens(question)
    found = {}
    for kind in LIST_KINDS:
        items = state.items(kind)
        scores = BM25Okapi([bm25_tokens(item.content) for item in items]).get_scores(words)
        order = np.lexsort((np.arange(len(items)), -scores))[:K]  # ties by position, like ours
        found[kind] = [items[i].id for i in order]
    return found


def rebuild_ours(state: MemoryState, question: str) -> dict[MemoryKind, list[str]]:
    words = bm25_tokens(question)
    found = {}
    for kind in LIST_KINDS:
        items = state.items(kind)
        index = BM25Index([bm25_tokens(item.content) for item in items])
        found[kind] = [items[position].id for position, _ in index.ranked(words, K)]
    return found


def cached(retriever: Retriever) -> Callable[[MemoryState, str], dict[MemoryKind, list[str]]]:
    def search(state: MemoryState, question: str) -> dict[MemoryKind, list[str]]:
        hits = retriever.search(state, question, K, LIST_KINDS, key="bench")
        return {kind: [s.item.id for s in scored] for kind, scored in hits.items()}

    return search


def per_query_ms(
    search: Callable[[MemoryState, str], object], state: MemoryState, questions: list[str]
) -> float:
    times = []
    for question in questions:
        started = time.perf_counter()
        search(state, question)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=50, help="questions timed on the cached index")
    parser.add_argument(
        "--rebuild-budget-s",
        type=float,
        default=20.0,
        help="time allowed per rebuild method and size (sets how many questions it gets, >= 3)",
    )
    args = parser.parse_args()

    pool = load_pool(args.data_dir)
    questions = pool.questions[: args.queries]
    print(f"BM25 top-{K} per kind, semantic + episodic; median ms per question; questions from SQuAD dev")
    print(
        f"{'items':>8} | {'cached':>9} | {'rebuild rank-bm25':>17} | {'rebuild ours':>12} | "
        f"{'rank-bm25 / cached':>18} | {'ours / cached':>13} | same top-k"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        state = pool.memory(size, seed=size)
        retriever = Retriever()
        search = cached(retriever)
        build_started = time.perf_counter()
        search(state, questions[0])  # the one build this memory version costs
        build_ms = (time.perf_counter() - build_started) * 1000
        cached_ms = per_query_ms(search, state, questions)
        # Rebuilding is slow at 100k: time as many questions as the budget allows (at least 3).
        probe_started = time.perf_counter()
        first = rebuild_rank_bm25(state, questions[0])
        probe_s = time.perf_counter() - probe_started
        rebuild_n = max(3, min(len(questions), int(args.rebuild_budget_s / max(probe_s, 1e-3))))
        sample = questions[:rebuild_n]
        upstream_ms = per_query_ms(rebuild_rank_bm25, state, sample)
        ours_ms = per_query_ms(rebuild_ours, state, sample)
        same = first == search(state, questions[0]) and all(
            rebuild_rank_bm25(state, q) == search(state, q) for q in sample[1:3]
        )
        print(
            f"{size:>8,} | {cached_ms:>7.2f}ms | {upstream_ms:>15.1f}ms | {ours_ms:>10.1f}ms | "
            f"{upstream_ms / cached_ms:>17.0f}x | {ours_ms / cached_ms:>12.0f}x | {'yes' if same else 'NO'}"
            f"   (one-off build {build_ms:.0f} ms; rebuild timed on {rebuild_n} questions)"
        )


if __name__ == "__main__":
    main()
