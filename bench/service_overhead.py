"""Per-chunk service overhead (everything but the policy call) on PostgreSQL, at 1k, 10k and 100k memory items.

The service runs as in production (`MemoryService`, in-process workers, Postgres, LISTEN/NOTIFY) with the
`openai` policy backend pointed at an instant scripted OpenAI-compatible server (`tests/scripted_llm.py`:
every request answered at once with one insert of the chunk). One session per size is preloaded through
the import API with that many real sentences; chunks then go to the sessions in turn, one
`ingest(wait=True)` at a time (so every chunk is a new lease). Per chunk: overhead = ingest wall time −
the policy call's wall time (prompt build + HTTP round trip to the instant server + parse), measured
around `propose`; overhead CPU = the same for the CPU time of the service's thread (the event loop:
Postgres and the scripted server's thread are not counted), which the machine's load inflates less
than wall time. `--profile FILE` writes a cProfile of the timed rounds (the service's thread only;
the scripted server runs in a thread of its own).

`--profile-calls` counts the Python function calls per chunk with cProfile over the timed rounds, the
policy call excluded as in the overhead (the profiler is paused around `propose`), and prints the 15
functions with the most own time: a call count is the same for the same code path however busy the
machine is, where CPU and wall time are not. With `--before DIR` (another tree of this repository,
e.g. unpacked with `git archive`) this file runs on that tree's code too, in a subprocess, and both
are printed side by side.

    python -m bench.service_overhead --data-dir ../shared/data [--chunks 40] [--sizes 1000,10000,100000]
        [--json FILE] [--profile FILE] [--profile-calls [--before DIR]]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.backends import make_policy
from app.memory import MemoryState
from app.policy import PolicyBackend, PolicyReply
from app.service import ChunkIn, MemoryService
from app.settings import Settings
from bench.call_counts import call_counts, print_calls
from bench.pg import scratch_database
from bench.text_pool import TextPool, load_pool
from tests.scripted_llm import ScriptedLLM

TENANT = "bench"
WHAT = "cProfile of the service's thread, the policy call excluded"


@dataclass
class TimedPolicy:
    """Wraps the real backend and remembers how long each chunk's `propose` took."""

    inner: PolicyBackend
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # of this thread (the event loop's)
    name: str = "openai"
    paused: cProfile.Profile | None = None  # a profiler to pause during the policy call

    @property
    def view_items(self) -> int | None:
        return self.inner.view_items

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> PolicyReply:
        profiler = self.paused
        if profiler is not None:
            profiler.disable()
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return await self.inner.propose(state, chunk, model=model)
        finally:
            self.seconds[chunk] = time.perf_counter() - started
            self.cpu_seconds[chunk] = time.thread_time() - cpu
            if profiler is not None:
                profiler.enable()

    async def health(self) -> bool:
        return await self.inner.health()

    async def aclose(self) -> None:
        await self.inner.aclose()


def import_payload(pool: TextPool, items: int) -> dict[str, object]:
    state = pool.memory(items, seed=items)
    now = datetime.now(UTC).isoformat()

    def rows(kind_items: list) -> list[dict[str, object]]:  # type: ignore[type-arg]
        return [
            {"id": item.id, "content": item.content, "created_at": now, "updated_at": now}
            for item in kind_items
        ]

    return {
        "format": "memalpha.session.v1",
        "memory": {
            "core": "",
            "version": state.version,
            "next_item": state.next_item,
            "semantic": rows(state.semantic),
            "episodic": rows(state.episodic),
        },
    }


async def start_service(
    database_url: str, llm: ScriptedLLM, *, claimers: int = 1
) -> tuple[MemoryService, TimedPolicy]:
    """A started service on the scripted LLM, its policy calls timed (shared with the Mem0 bench);
    `claimers`: its claim loops (`MEMALPHA_WORKERS`)."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=database_url,
        auto_migrate=True,
        policy_backend="openai",
        policy_url=llm.url,
        policy_model=llm.model,
        workers=claimers,
        max_items_per_kind=100_000,
        ingest_wait_timeout_s=600.0,  # the slowest chunks (before issue 13, 100k items) take seconds
    )
    policy = TimedPolicy(make_policy(settings))
    service = MemoryService(settings, policy=policy)
    await service.start(run_workers=True)
    return service, policy


async def measure(args: argparse.Namespace, database_url: str, llm: ScriptedLLM) -> None:
    service, policy = await start_service(database_url, llm)
    pool = load_pool(args.data_dir)
    sizes = args.sizes
    profiler = cProfile.Profile() if args.profile or args.profile_calls else None
    try:
        for size in sizes:
            await service.exchange.import_session(TENANT, f"s{size}", import_payload(pool, size))
        # Chunks are fresh text (LoCoMo turns and SQuAD paragraphs not used as preloaded items are fine:
        # the policy echoes them as new items).
        texts = iter(pool.paragraphs[::-1])
        walls: dict[int, list[float]] = {size: [] for size in sizes}
        overheads: dict[int, list[float]] = {size: [] for size in sizes}
        cpus: dict[int, list[float]] = {size: [] for size in sizes}
        for round_ in range(args.chunks + args.warmup):
            if profiler is not None and round_ == args.warmup:
                profiler.enable()
                if args.profile_calls:
                    policy.paused = profiler
            for size in sizes:
                chunk = f"{next(texts)} (chunk {round_} of s{size})"
                started, cpu = time.perf_counter(), time.thread_time()
                outcome = await service.ingestion.ingest(
                    TENANT, f"s{size}", [ChunkIn(content=chunk)], wait=True
                )
                wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
                if outcome.chunks[0].status != "done":
                    raise RuntimeError(f"chunk not done: {outcome}")
                if round_ >= args.warmup:
                    walls[size].append(wall)
                    overheads[size].append(wall - policy.seconds[chunk])
                    cpus[size].append(cpu - policy.cpu_seconds[chunk])
        if profiler is not None:
            profiler.disable()
            policy.paused = None
            if args.profile:
                profiler.dump_stats(args.profile)
        memory = {size: await service.sessions.get_session(TENANT, f"s{size}") for size in sizes}
    finally:
        await service.stop()
        await policy.aclose()  # given to the service, so not closed by it

    def p50(values: list[float]) -> float:
        return statistics.median(values) * 1000

    def p90(values: list[float]) -> float:
        return statistics.quantiles(values, n=10)[-1] * 1000

    def ms(values: list[float]) -> str:
        return f"{p50(values):7.1f} ms (p90 {p90(values):6.1f})"

    print(
        f"PostgreSQL, in-process worker, instant scripted policy server; {args.chunks} chunks per size "
        f"after {args.warmup} warm-up, one ingest(wait=True) at a time; medians; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for size in sizes:
        policy_ms = [w - o for w, o in zip(walls[size], overheads[size], strict=True)]
        print(
            f"  {size:>6,} items: ingest {ms(walls[size])} | policy call {ms(policy_ms)} | "
            f"overhead {ms(overheads[size])} | overhead CPU {ms(cpus[size])}   "
            f"(session now: {memory[size].items})"
        )
    smallest = sizes[0]
    for size in sizes[1:]:
        ratio = p50(overheads[size]) / p50(overheads[smallest])
        cpu_ratio = p50(cpus[size]) / p50(cpus[smallest])
        print(
            f"  overhead ratio {size:,} / {smallest:,} items (p50): {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU"
        )
    if profiler is not None and args.profile_calls:
        counted = call_counts(pstats.Stats(profiler), args.chunks * len(sizes))
        if args.calls_json:
            args.calls_json.write_text(json.dumps(counted) + "\n", encoding="utf-8")
        else:
            print_calls({"this tree": counted}, WHAT)
    if args.json:
        summary = {
            "load_average": os.getloadavg()[0],
            "chunks": args.chunks,
            "sizes": {
                str(size): {
                    "overhead_p50_ms": p50(overheads[size]),
                    "overhead_p90_ms": p90(overheads[size]),
                    "overhead_cpu_p50_ms": p50(cpus[size]),
                    "overhead_cpu_p90_ms": p90(cpus[size]),
                    "ingest_p50_ms": p50(walls[size]),
                    "policy_p50_ms": p50([w - o for w, o in zip(walls[size], overheads[size], strict=True)]),
                    # per chunk, for confidence intervals between runs
                    "overhead_ms": [value * 1000 for value in overheads[size]],
                    "overhead_cpu_ms": [value * 1000 for value in cpus[size]],
                }
                for size in sizes
            },
        }
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def _calls_of(tree: Path, argv: list[str]) -> dict[str, Any]:
    """This file's `--profile-calls` figures on `tree`'s code (a subprocess with that tree on the path)."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "calls.json"
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), *argv, "--calls-json", str(out)],
            cwd=tree,
            env=os.environ | {"PYTHONPATH": str(tree.resolve())},
            check=True,
        )
        return json.loads(out.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--chunks", type=int, default=40, help="timed chunks per memory size")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--sizes",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=(1_000, 10_000, 100_000),
        help="memory sizes (items), smallest first: ratios are against it",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the timed rounds here")
    parser.add_argument(
        "--profile-calls", action="store_true", help="print Python function calls per chunk and the top 15"
    )
    parser.add_argument("--before", type=Path, help="with --profile-calls: a tree to count side by side")
    parser.add_argument("--calls-json", type=Path, help=argparse.SUPPRESS)  # a subprocess of --before
    args = parser.parse_args()
    if args.before:
        if not args.profile_calls:
            parser.error("--before needs --profile-calls")
        argv = [arg for arg in sys.argv[1:] if arg not in ("--before", str(args.before))]
        here = Path(__file__).resolve().parents[1]  # this tree
        trees = {"before": _calls_of(args.before, argv), "after": _calls_of(here, argv)}
        print_calls(trees, WHAT)
        return
    with scratch_database() as (url, _), ScriptedLLM() as llm:
        asyncio.run(measure(args, url, llm))


if __name__ == "__main__":
    main()
