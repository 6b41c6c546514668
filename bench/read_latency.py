"""Answer and search latency on the service side (no LLM: the extractive answerer), on PostgreSQL, at 10k
and 100k memory items.

`MemoryService` (no workers) on a scratch Postgres database; one session per size is imported with
that many real sentences (half semantic, half episodic), then real SQuAD questions go to
`answers.search` (top-k per kind) and `answers.answer` (the default budget-filled context and the
extractive answerer), one at a time, alternating sizes. Per call: wall time of the service method,
i.e. the session row read, the memory (cached per version), the BM25 index (cached per version) and
ranking, the context and the answer, and the CPU time of the calling thread over the same span (the
event loop's; Postgres runs apart), which a loaded machine inflates less than wall time. The first
question after the import is reported apart: it loads the memory and builds the indexes. With
`--writes N`, each session then gets N manual inserts (a new version each), and the first answer after
each is timed: what a new version costs the memory cache and the index.

    python -m bench.read_latency --data-dir ../shared/data [--questions 200] [--sizes 10000,100000]
        [--writes N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from app.service import MemoryService
from app.settings import Settings
from bench.pg import scratch_database
from bench.service_overhead import import_payload
from bench.text_pool import load_pool

TENANT = "bench"


async def measure(args: argparse.Namespace, database_url: str) -> dict[str, object]:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=database_url, auto_migrate=True, max_items_per_kind=100_000
    )
    service = MemoryService(settings)
    await service.start(run_workers=False)
    pool = load_pool(args.data_dir)
    questions = pool.questions[: args.questions]
    times: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    first: dict[int, float] = {}
    try:
        for size in args.sizes:
            await service.exchange.import_session(TENANT, f"s{size}", import_payload(pool, size))
            started = time.perf_counter()
            await service.answers.answer(TENANT, f"s{size}", questions[0], k=None)
            first[size] = time.perf_counter() - started
        for question in questions:
            for size in args.sizes:
                for op in ("search", "answer"):
                    started, cpu_started = time.perf_counter(), time.thread_time()
                    if op == "search":
                        await service.answers.search(TENANT, f"s{size}", question, k=None, memory_type=None)
                    else:
                        await service.answers.answer(TENANT, f"s{size}", question, k=None)
                    times.setdefault((op, size), []).append(time.perf_counter() - started)
                    cpu.setdefault((op, size), []).append(time.thread_time() - cpu_started)
        for size in args.sizes:  # the first answer after a write: one manual insert, a new version
            for n in range(args.writes):
                # A content no item has (a duplicate insert is rejected: no new version).
                content = f"{pool.sentences[n]} (noted after the import, {n})"
                result = await service.memory.insert_item(TENANT, f"s{size}", "semantic", content)
                assert result.status == "ok", result
                started, cpu_started = time.perf_counter(), time.thread_time()
                await service.answers.answer(TENANT, f"s{size}", questions[n % len(questions)], k=None)
                times.setdefault(("after_write", size), []).append(time.perf_counter() - started)
                cpu.setdefault(("after_write", size), []).append(time.thread_time() - cpu_started)
    finally:
        await service.stop()

    def ms(values: list[float], q: int) -> float:
        return (
            statistics.quantiles(values, n=10)[q - 1] * 1000 if q != 5 else statistics.median(values) * 1000
        )

    print(
        f"PostgreSQL, service methods, no LLM; {len(questions)} SQuAD questions per size, one call at a "
        f"time; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    summary: dict[str, object] = {"load_average": os.getloadavg()[0], "questions": len(questions)}
    for size in args.sizes:
        row: dict[str, float] = {"first_answer_ms": first[size] * 1000}
        for op in ("search", "answer"):
            row[f"{op}_p50_ms"], row[f"{op}_p90_ms"] = ms(times[op, size], 5), ms(times[op, size], 9)
            row[f"{op}_cpu_p50_ms"], row[f"{op}_cpu_p90_ms"] = ms(cpu[op, size], 5), ms(cpu[op, size], 9)
        # per call, for confidence intervals between runs
        samples = {
            f"{op}_{unit}": [v * 1000 for v in data[op, size]]
            for op in ("search", "answer", "after_write")
            for unit, data in (("ms", times), ("cpu_ms", cpu))
            if (op, size) in data
        }
        summary[str(size)] = {**row, "samples": samples}
        print(
            f"  {size:>7,} items: search p50 {row['search_p50_ms']:6.2f} ms (p90 {row['search_p90_ms']:6.2f},"
            f" CPU {row['search_cpu_p50_ms']:5.2f}) | answer p50 {row['answer_p50_ms']:6.2f} ms"
            f" (p90 {row['answer_p90_ms']:6.2f}, CPU {row['answer_cpu_p50_ms']:5.2f})"
            f" | first answer (load + index) {row['first_answer_ms']:8.1f} ms"
        )
        if args.writes:
            print(
                f"           first answer after a write: p50 {ms(times['after_write', size], 5):8.1f} ms,"
                f" CPU {ms(cpu['after_write', size], 5):8.1f} ms (n = {args.writes})"
            )
    smallest, largest = str(args.sizes[0]), str(args.sizes[-1])
    for op in ("search", "answer"):
        ratio = summary[largest][f"{op}_p50_ms"] / summary[smallest][f"{op}_p50_ms"]  # type: ignore[index]
        print(f"  {op} p50 ratio {int(largest):,} / {int(smallest):,} items: {ratio:.2f}x")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument(
        "--sizes", type=lambda text: tuple(int(n) for n in text.split(",")), default=(10_000, 100_000)
    )
    parser.add_argument(
        "--writes", type=int, default=0, help="then time the first answer after each of N writes"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with scratch_database() as (url, _):
        summary = asyncio.run(measure(args, url))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
