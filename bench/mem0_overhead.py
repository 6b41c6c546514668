"""Per-add overhead side by side with a peer: Mem0's open-source library (`mem0ai`, its local default
vector store, Qdrant on disk) against this service, both against instant scripted OpenAI-compatible
servers (`tests/scripted_llm.py`), on the same machine in one run.

Ours: `MemoryService` on a scratch Postgres database with in-process workers and the `openai` policy
backend; one `ingest(wait=True)` per add. Mem0: `Memory.from_config` with the `openai` LLM and the
`openai` embedder both pointed at a scripted server (chat replies `{"memory": [{"text": <chunk>}]}`,
the shape of its extraction call; embeddings are hashed bags of words), Qdrant in a temporary
directory and its SQLite history; one `Memory.add` per add. Both memories are preloaded with the same
real sentences (ours through the import API, Mem0's with `infer=False`), then the adds alternate.

Overhead = wall time of the add − time in the model calls (ours: the policy's `propose`, i.e. prompt
build, HTTP round trip and parse; Mem0: its `generate_response`, `embed` and `embed_batch`, i.e. the
HTTP round trips to the same kind of instant server). Each side writes one item per add.

    python -m bench.mem0_overhead --data-dir ../shared/data [--adds 30] [--preload 1000] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("MEM0_TELEMETRY", "False")  # no network from the benchmark

from app.service import ChunkIn
from bench.pg import scratch_database
from bench.service_overhead import import_payload, start_service
from bench.text_pool import load_pool
from tests.scripted_llm import EMBEDDING_DIMS, Echo, JsonMemory, ScriptedLLM

TENANT, SESSION, USER = "bench", "peer", "bench-user"


def mem0_memory(llm: ScriptedLLM, directory: Path) -> Any:
    from mem0 import Memory  # the eval extra: never imported by the service

    return Memory.from_config(
        {
            "llm": {
                "provider": "openai",
                "config": {"model": llm.model, "api_key": "EMPTY", "openai_base_url": llm.url},
            },
            "embedder": {
                "provider": "openai",
                "config": {
                    "model": "scripted-embedding",
                    "api_key": "EMPTY",
                    "openai_base_url": llm.url,
                    "embedding_dims": EMBEDDING_DIMS,
                },
            },
            "vector_store": {
                "provider": "qdrant",
                "config": {
                    "collection_name": "bench",
                    "path": str(directory / "qdrant"),
                    "on_disk": True,
                    "embedding_model_dims": EMBEDDING_DIMS,
                },
            },
            "history_db_path": str(directory / "history.db"),
        }
    )


class ModelTime:
    """Wraps an object's methods so the seconds spent in them add up in `seconds`."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, owner: Any, name: str) -> None:
        inner: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        setattr(owner, name, timed)


async def measure(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    pool = load_pool(args.data_dir)
    payload = import_payload(pool, args.preload)
    preload = [item["content"] for kind in ("semantic", "episodic") for item in payload["memory"][kind]]  # type: ignore[index]
    texts = pool.paragraphs[::-1][: args.adds + args.warmup]
    ours: dict[str, list[float]] = {"wall": [], "overhead": []}
    theirs: dict[str, list[float]] = {"wall": [], "overhead": []}
    with (
        ScriptedLLM(default=Echo()) as our_llm,
        ScriptedLLM(default=JsonMemory()) as their_llm,
        tempfile.TemporaryDirectory() as tmp,
    ):
        service, policy = await start_service(database_url, our_llm)
        try:
            await service.exchange.import_session(TENANT, SESSION, payload)
            memory = mem0_memory(their_llm, Path(tmp))
            started = time.perf_counter()
            memory.add([{"role": "user", "content": text} for text in preload], user_id=USER, infer=False)
            preload_s = time.perf_counter() - started
            model = ModelTime()
            model.wrap(memory.llm, "generate_response")
            model.wrap(memory.embedding_model, "embed")
            model.wrap(memory.embedding_model, "embed_batch")
            for n, text in enumerate(texts):
                chunk = f"{text} (add {n})"
                started = time.perf_counter()
                outcome = await service.ingestion.ingest(TENANT, SESSION, [ChunkIn(content=chunk)], wait=True)
                wall = time.perf_counter() - started
                if outcome.chunks[0].status != "done":
                    raise RuntimeError(f"chunk not done: {outcome}")
                if n >= args.warmup:
                    ours["wall"].append(wall)
                    ours["overhead"].append(wall - policy.seconds[chunk])

                model.seconds = 0.0
                started = time.perf_counter()
                added = memory.add(
                    [{"role": "user", "content": f"<new_chunk>{chunk}</new_chunk>"}], user_id=USER
                )
                wall = time.perf_counter() - started
                if len(added.get("results", [])) != 1:
                    raise RuntimeError(f"Mem0 did not add one memory: {added}")
                if n >= args.warmup:
                    theirs["wall"].append(wall)
                    theirs["overhead"].append(wall - model.seconds)
            their_count = len(
                memory.get_all(filters={"user_id": USER}, top_k=args.preload + len(texts) + 10)["results"]
            )
        finally:
            await service.stop()
            await policy.aclose()  # given to the service, so not closed by it
        requests = len(their_llm.requests)
        embedded = their_llm.embedded

    def ms(values: list[float], q: int) -> float:
        return (statistics.median(values) if q == 5 else statistics.quantiles(values, n=10)[q - 1]) * 1000

    summary: dict[str, Any] = {
        "load_average": os.getloadavg()[0],
        "preload": args.preload,
        "adds": args.adds,
        "mem0_preload_s": preload_s,
        "mem0_memories_after": their_count,
        "mem0_chat_requests": requests,
        "mem0_texts_embedded": embedded,
    }
    print(
        f"Same machine, one run, instant scripted servers; {args.preload:,} items preloaded; {args.adds} adds "
        f"after {args.warmup} warm-up, alternating; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    for name, figures in (("memalpha", ours), ("mem0", theirs)):
        row = {
            f"{what}_{q}": ms(figures[what], n)
            for what in ("wall", "overhead")
            for q, n in (("p50", 5), ("p90", 9))
        }
        summary[name] = row
        print(
            f"  {name:>8}: add p50 {row['wall_p50']:7.1f} ms (p90 {row['wall_p90']:7.1f}) | overhead p50 "
            f"{row['overhead_p50']:7.1f} ms (p90 {row['overhead_p90']:7.1f})"
        )
    ratio = summary["mem0"]["overhead_p50"] / summary["memalpha"]["overhead_p50"]
    summary["overhead_ratio_mem0_over_memalpha"] = ratio
    print(f"  overhead p50 ratio mem0 / memalpha: {ratio:.2f}x")
    print(
        f"  mem0: {requests} chat requests, {embedded} texts embedded, {their_count} memories after "
        f"(preload took {preload_s:.1f} s)"
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--adds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--preload", type=int, default=1_000)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with scratch_database() as (url, _):
        summary = asyncio.run(measure(args, url))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
