"""Per-chunk service overhead (everything but the policy call) on PostgreSQL, at 1k and 10k memory items.

The service runs as in production (`MemoryService`, in-process workers, Postgres, LISTEN/NOTIFY) with the
`openai` policy backend pointed at an instant scripted OpenAI-compatible server (`tests/scripted_llm.py`:
every request answered at once with one insert of the chunk). Two sessions are preloaded through the
import API with 1,000 and 10,000 real sentences; chunks then go to both sessions alternately, one
`ingest(wait=True)` at a time. Per chunk: overhead = ingest wall time − the policy call's wall time
(prompt build + HTTP round trip to the instant server + parse), measured around `propose`.

    python -m bench.service_overhead --data-dir ../shared/data [--chunks 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from app.memory import MemoryState
from app.policy import PolicyBackend, PolicyReply, make_policy
from app.service import ChunkIn, MemoryService
from app.settings import Settings
from bench.pg import scratch_database
from bench.text_pool import TextPool, load_pool
from tests.scripted_llm import ScriptedLLM

TENANT = "bench"


@dataclass
class TimedPolicy:
    """Wraps the real backend and remembers how long each chunk's `propose` took."""

    inner: PolicyBackend
    seconds: dict[str, float] = field(default_factory=dict)
    name: str = "openai"

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> PolicyReply:
        started = time.perf_counter()
        try:
            return await self.inner.propose(state, chunk, model=model)
        finally:
            self.seconds[chunk] = time.perf_counter() - started

    async def health(self) -> bool:
        return await self.inner.health()

    async def aclose(self) -> None:
        await self.inner.aclose()


def import_payload(pool: TextPool, items: int) -> dict[str, object]:
    state = pool.memory(items, seed=items)
    now = datetime.now(UTC).isoformat()

    def rows(kind_items: list) -> list[dict[str, object]]:  # type: ignore[type-arg]
        return [{"id": item.id, "content": item.content, "created_at": now, "updated_at": now} for item in kind_items]

    return {"format": "memalpha.session.v1", "memory": {
        "core": "", "version": state.version, "next_item": state.next_item,
        "semantic": rows(state.semantic), "episodic": rows(state.episodic),
    }}


async def measure(args: argparse.Namespace, database_url: str, llm: ScriptedLLM) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=database_url, auto_migrate=True, policy_backend="openai", policy_url=llm.url,
        policy_model=llm.model, workers=1, max_items_per_kind=100_000,
    )
    policy = TimedPolicy(make_policy(settings))
    service = MemoryService(settings, policy=policy)
    await service.start(run_workers=True)
    pool = load_pool(args.data_dir)
    sizes = (1_000, 10_000)
    try:
        for size in sizes:
            await service.import_session(TENANT, f"s{size}", import_payload(pool, size))
        # Chunks are fresh text (LoCoMo turns and SQuAD paragraphs not used as preloaded items are fine:
        # the policy echoes them as new items).
        texts = iter(pool.paragraphs[::-1])
        walls: dict[int, list[float]] = {size: [] for size in sizes}
        overheads: dict[int, list[float]] = {size: [] for size in sizes}
        for round_ in range(args.chunks + args.warmup):
            for size in sizes:
                chunk = f"{next(texts)} (chunk {round_} of s{size})"
                started = time.perf_counter()
                outcome = await service.ingest(TENANT, f"s{size}", [ChunkIn(content=chunk)], wait=True)
                wall = time.perf_counter() - started
                if outcome.chunks[0].status != "done":
                    raise RuntimeError(f"chunk not done: {outcome}")
                if round_ >= args.warmup:
                    walls[size].append(wall)
                    overheads[size].append(wall - policy.seconds[chunk])
        memory = {size: await service.get_session(TENANT, f"s{size}") for size in sizes}
    finally:
        await service.stop()

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:7.1f} ms (p90 {statistics.quantiles(values, n=10)[-1] * 1000:6.1f})"

    print(f"PostgreSQL, in-process worker, instant scripted policy server; {args.chunks} chunks per size "
          f"after {args.warmup} warm-up, one ingest(wait=True) at a time; medians; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for size in sizes:
        policy_ms = [w - o for w, o in zip(walls[size], overheads[size], strict=True)]
        print(f"  {size:>6,} items: ingest {ms(walls[size])} | policy call {ms(policy_ms)} | "
              f"overhead {ms(overheads[size])}   (session now: {memory[size].get('items', memory[size])})")
    ratio = statistics.median(overheads[10_000]) / statistics.median(overheads[1_000])
    print(f"  overhead ratio 10k / 1k items: {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--chunks", type=int, default=40, help="timed chunks per memory size")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    with scratch_database() as (url, _), ScriptedLLM() as llm:
        asyncio.run(measure(args, url, llm))


if __name__ == "__main__":
    main()
