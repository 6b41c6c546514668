"""Ingest throughput across many sessions at a total policy concurrency: 1 vs 2 `memalpha worker`
processes (the same total concurrency split between them), on PostgreSQL.

Per configuration, a fresh database receives 50 sessions × N chunks through the service (`ingest`,
wait=false, no workers in this process), then `memalpha worker` processes start (each with the same
`--workers` claim loops and its share of the concurrency) against a scripted OpenAI-compatible policy server that answers every
chunk with one insert — instantly, or after a fixed delay that stands in for an LLM's latency.
Throughput = chunks / (last `done_at` − first `started_at`), from the chunk log itself, so process
start-up is not counted.

    python -m bench.ingest_throughput --data-dir ../shared/data [--sessions 50] [--chunks 10] [--delay-ms 0,200]
        [--concurrency 8,32,128]

With a policy latency L and a total concurrency C, the ceiling is C / L chunks/s; the goal is 0.8 of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from app.service import ChunkIn, MemoryService
from app.settings import Settings
from bench.pg import scratch_database
from bench.text_pool import load_pool
from tests.scripted_llm import Delay, Echo, ScriptedLLM

TENANT = "bench"


async def enqueue(database_url: str, texts: list[str], sessions: int, chunks: int) -> None:
    settings = Settings(_env_file=None, database_url=database_url, auto_migrate=True)  # type: ignore[call-arg]
    service = MemoryService(settings)
    await service.start(run_workers=False)
    try:

        async def one_session(n: int) -> None:
            for c in range(chunks):
                text = f"{texts[(n * chunks + c) % len(texts)]} (session {n}, chunk {c})"
                await service.ingestion.ingest(
                    TENANT, f"session-{n:03d}", [ChunkIn(content=text)], wait=False
                )

        await asyncio.gather(*(one_session(n) for n in range(sessions)))
    finally:
        await service.stop()


def wait_done(libpq_url: str, total: int, timeout_s: float) -> tuple[float, int]:
    """Poll the chunk log until every chunk is final; (seconds from first start to last done, done)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE status IN ('done', 'failed')), count(*) FILTER (WHERE status = 'done'),"
                " extract(epoch FROM max(done_at) - min(started_at)) FROM chunks"
            ).fetchone()
            assert row is not None
            final, done, span = row
            if final >= total:
                return float(span or 0.0), int(done)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{final}/{total} chunks final after {timeout_s} s")
            time.sleep(0.2)


def run_config(
    args: argparse.Namespace, texts: list[str], processes: int, delay_s: float, concurrency: int
) -> tuple[float, int]:
    behaviour = Delay(delay_s, Echo()) if delay_s > 0 else Echo()
    total = args.sessions * args.chunks
    with scratch_database() as (url, libpq_url), ScriptedLLM(default=behaviour) as llm:
        asyncio.run(enqueue(url, texts, args.sessions, args.chunks))
        env = {**os.environ, "MEMALPHA_POLL_INTERVAL_S": "0.2", "MEMALPHA_LOG_LEVEL": "WARNING"}
        command = [
            sys.executable,
            "-m",
            "app.cli",
            "worker",
            "--database-url",
            url,
            "--workers",
            str(args.workers),
            "--concurrency",
            str(max(1, concurrency // processes)),
            "--policy-url",
            llm.url,
            "--policy-model",
            llm.model,
        ]
        workers = [subprocess.Popen(command, env=env) for _ in range(processes)]
        try:
            span, done = wait_done(libpq_url, total, args.timeout_s)
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)
    return span, done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=10, help="chunks per session")
    parser.add_argument("--workers", type=int, default=2, help="claim loops per process")
    parser.add_argument(
        "--concurrency", default="32", help="total policy calls in flight (split between processes)"
    )
    parser.add_argument(
        "--delay-ms", default="0,200", help="scripted policy latencies to run, comma-separated"
    )
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    texts = load_pool(args.data_dir).paragraphs
    total = args.sessions * args.chunks
    print(
        f"{args.sessions} sessions x {args.chunks} chunks = {total} chunks; {args.workers} claim loops per "
        f"process; PostgreSQL; scripted policy server; {os.cpu_count()} CPU cores shared with the database; "
        f"load average before: {os.getloadavg()[0]:.1f}"
    )
    for delay_ms in (float(d) for d in args.delay_ms.split(",")):
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            rates = {}
            for processes in (1, 2):
                span, done = run_config(args, texts, processes, delay_ms / 1000, concurrency)
                rates[processes] = done / span if span else float("inf")
                print(
                    f"  policy latency {delay_ms:5.0f} ms, concurrency {concurrency:4d}, {processes} process(es): "
                    f"{done} chunks done in {span:6.1f} s = {rates[processes]:6.1f} chunks/s"
                )
            goal = (
                f"; goal 0.8 x C/L = {0.8 * concurrency * 1000 / delay_ms:.1f} chunks/s" if delay_ms else ""
            )
            print(
                f"  policy latency {delay_ms:5.0f} ms, concurrency {concurrency:4d}: "
                f"2 / 1 processes = {rates[2] / rates[1]:.2f}x{goal}; load average {os.getloadavg()[0]:.1f}"
            )


if __name__ == "__main__":
    main()
