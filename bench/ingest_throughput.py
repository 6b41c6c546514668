"""Ingest throughput across many sessions at a total policy concurrency: 1 vs 2 `memalpha worker`
processes (the same total concurrency split between them), on PostgreSQL.

Per configuration, a fresh database receives 50 sessions × N chunks through the service (`ingest`,
wait=false, no workers in this process), then `memalpha worker` processes start (each with the same
`--workers` claim loops and its share of the concurrency) against a scripted OpenAI-compatible policy server that answers every
chunk with one insert — instantly, or after a fixed delay that stands in for an LLM's latency.
Throughput = chunks / (last `done_at` − first `started_at`), from the chunk log itself, so process
start-up is not counted.

    python -m bench.ingest_throughput --data-dir ../shared/data [--sessions 50] [--chunks 10] [--delay-ms 0,200]
        [--concurrency 8,32,128] [--latency-spread 0.5]

With a policy latency L and a total concurrency C, the ceiling is C / L chunks/s; the goal is 0.8 of it.
Printed beside each rate: the policy calls in flight on average (the stand-in's own record: below C, slots
stood empty), a chunk's mean time from claim to done (above L: time in the worker or waiting in it) and each
worker process's CPU over the span (near 100%: the worker's core is what bounds it).

`--profile-calls` counts instead of timing: one process at the first concurrency, with an instant policy,
runs under `bench.profiled_worker` (a cProfile of its event loop's thread, the policy call's client side
included). A warm-up of other sessions runs first (start-up, the pooled connections, SQLAlchemy's caches);
then the worker is stopped (SIGSTOP) while the measured sessions are queued, so that it finds them all
queued as in the timed bench, and the profiler counts from its resumption until the last chunk is done.
Printed: calls per chunk by layer (builtins and unlisted standard library charged to their callers, see
`bench/call_counts.py`) and the most called functions.

    python -m bench.ingest_throughput --data-dir ../shared/data --concurrency 32 --profile-calls

`--cpu-per-chunk` runs the same protocol with the plain `memalpha worker` and prints its process's CPU
seconds (user + system, /proc) from the resumption to the last chunk, per chunk: what bounds P4 when the
worker's core is the bottleneck, and far less sensitive to other load than chunks/s (a Python call count
cannot compare code whose work moves into C, such as another event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg

from app.service import ChunkIn, MemoryService
from app.settings import Settings
from bench.call_counts import Layers, call_counts, print_calls
from bench.pg import scratch_database
from bench.text_pool import load_pool
from tests.scripted_llm import Delay, Echo, ScriptedLLM

TENANT = "bench"


async def enqueue(
    database_url: str, texts: list[str], sessions: int, chunks: int, prefix: str = "session"
) -> None:
    settings = Settings(_env_file=None, database_url=database_url, auto_migrate=True)  # type: ignore[call-arg]
    service = MemoryService(settings)
    await service.start(run_workers=False)
    try:

        async def one_session(n: int) -> None:
            for c in range(chunks):
                text = f"{texts[(n * chunks + c) % len(texts)]} (session {n}, chunk {c})"
                await service.ingestion.ingest(
                    TENANT, f"{prefix}-{n:03d}", [ChunkIn(content=text)], wait=False
                )

        await asyncio.gather(*(one_session(n) for n in range(sessions)))
    finally:
        await service.stop()


def wait_started(libpq_url: str, timeout_s: float) -> None:
    """Until a worker has started the first chunk (its start-up is not the run's)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(libpq_url, autocommit=True) as conn:
        while not conn.execute(
            "SELECT EXISTS (SELECT 1 FROM chunks WHERE started_at IS NOT NULL)"
        ).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no chunk started after {timeout_s} s")
            time.sleep(0.02)


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


@dataclass(frozen=True)
class Run:
    span_s: float  # first chunk started → last chunk done (the chunk log's clock)
    done: int
    in_flight: float  # policy calls in flight on the stand-in, mean over its busy span (Little's law)
    worker_s: float  # a chunk's mean time from its claim to done (the policy call's latency included)
    worker_cpu: float  # CPU seconds per second of the span, per worker process (1.0: a whole core)


def run_config(
    args: argparse.Namespace, texts: list[str], processes: int, delay_s: float, concurrency: int
) -> Run:
    behaviour = Delay(delay_s, Echo(), args.latency_spread) if delay_s > 0 else Echo()
    total = args.sessions * args.chunks
    with scratch_database() as (url, libpq_url), ScriptedLLM(default=behaviour) as llm:
        asyncio.run(enqueue(url, texts, args.sessions, args.chunks))
        command = ["app.cli", *worker_args(args, url, llm, max(1, concurrency // processes))]
        workers = [start_worker(command) for _ in range(processes)]
        try:
            wait_started(libpq_url, args.timeout_s)
            cpu = [-process_cpu_s(worker.pid) for worker in workers]
            span, done = wait_done(libpq_url, total, args.timeout_s)
            cpu = [used + process_cpu_s(worker.pid) for used, worker in zip(cpu, workers, strict=True)]
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)
        with psycopg.connect(libpq_url, autocommit=True) as conn:
            row = conn.execute("SELECT extract(epoch FROM avg(done_at - started_at)) FROM chunks").fetchone()
        calls = [(r.started, r.finished) for r in llm.requests if r.finished is not None]
    busy = max(f for _, f in calls) - min(s for s, _ in calls) if calls else 0.0
    in_flight = sum(f - s for s, f in calls) / busy if busy else 0.0
    worker_cpu = sum(cpu) / span / processes if span else 0.0
    return Run(span, done, in_flight, float(row[0] or 0.0) if row else 0.0, worker_cpu)


def worker_args(args: argparse.Namespace, url: str, llm: ScriptedLLM, concurrency: int) -> list[str]:
    """`memalpha worker` and its options."""
    return [
        "worker",
        "--database-url",
        url,
        "--workers",
        str(args.workers),
        "--concurrency",
        str(concurrency),
        "--policy-url",
        llm.url,
        "--policy-model",
        llm.model,
    ]


def start_worker(module_and_args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEMALPHA_POLL_INTERVAL_S": "0.2", "MEMALPHA_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", *module_and_args], env=env)


# The worker's layers for `--profile-calls` (first match on the function's file).
LAYERS: Layers = (
    ("app: policy client (app/policy)", ("/app/policy/",)),
    ("app: ingest (app/ingest)", ("/app/ingest/",)),
    ("app: store (app/store)", ("/app/store/",)),
    ("app: memory (app/memory)", ("/app/memory/",)),
    ("app: other", ("/app/",)),
    # Before the SDK: its aiohttp transport is vendored under openai/_vendor/.
    (
        "HTTP client (httpx2, aiohttp; httpcore2, h11, anyio)",
        (
            "/httpx",
            "/httpcore",
            "/h11/",
            "/anyio/",
            "/sniffio/",
            "/aiohttp",
            "/multidict/",
            "/yarl/",
            "/openai/_vendor/",
        ),
    ),
    ("openai SDK", ("/openai/",)),
    ("pydantic", ("/pydantic",)),
    ("tenacity", ("/tenacity/",)),
    ("prometheus_client", ("/prometheus_client/",)),
    ("logging", ("/logging/",)),
    ("json", ("/json/",)),
    ("SQLAlchemy", ("/sqlalchemy/",)),
    ("psycopg", ("/psycopg",)),
    ("asyncio", ("/asyncio/",)),
)
WARMUP_SESSIONS, WARMUP_CHUNKS = 32, 2  # one policy call per pooled connection at C = 32


def measured_run(
    args: argparse.Namespace,
    texts: list[str],
    module: list[str],
    on_resume: Callable[[subprocess.Popen[bytes]], None],
    on_done: Callable[[subprocess.Popen[bytes]], None],
) -> tuple[int, int]:
    """One worker process (`module` runs `memalpha worker`), warmed up on other sessions, then stopped
    (SIGSTOP) while the measured sessions are queued and resumed: `on_resume` runs while it is stopped,
    just before it resumes, `on_done` once the last measured chunk is final. (measured chunks done,
    policy requests for them)."""
    concurrency = int(args.concurrency.split(",")[0])
    warm, total = WARMUP_SESSIONS * WARMUP_CHUNKS, args.sessions * args.chunks
    with scratch_database() as (url, libpq_url), ScriptedLLM(default=Echo()) as llm:
        asyncio.run(enqueue(url, texts[::-1], WARMUP_SESSIONS, WARMUP_CHUNKS, prefix="warmup"))
        worker = start_worker([*module, *worker_args(args, url, llm, concurrency)])
        try:
            wait_done(libpq_url, warm, args.timeout_s)
            worker.send_signal(signal.SIGSTOP)
            asyncio.run(enqueue(url, texts, args.sessions, args.chunks))
            on_resume(worker)
            worker.send_signal(signal.SIGCONT)
            requests = len(llm.requests)
            _, done = wait_done(libpq_url, warm + total, args.timeout_s)
            on_done(worker)
            requests = len(llm.requests) - requests
        finally:
            worker.send_signal(signal.SIGCONT)
            worker.terminate()
            worker.wait(timeout=30)
    return done - warm, requests


def _measured_header(args: argparse.Namespace, done: int, requests: int) -> str:
    total = args.sessions * args.chunks
    return (
        f"{args.sessions} sessions x {args.chunks} chunks (after {WARMUP_SESSIONS} x {WARMUP_CHUNKS} "
        f"warm-up), 1 process, concurrency {args.concurrency.split(',')[0]}, {args.workers} claim loops, "
        f"instant policy; {done} of the measured chunks done; {requests / total:.2f} policy requests per chunk"
    )


def profile_calls(args: argparse.Namespace, texts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        stats = str(Path(scratch) / "worker.prof")
        done, requests = measured_run(
            args,
            texts,
            ["bench.profiled_worker", stats, *(["--cpu-clock"] if args.cpu_clock else [])],
            # SIGUSR1 is delivered at the SIGCONT, before the worker runs on
            lambda worker: worker.send_signal(signal.SIGUSR1),
            lambda worker: worker.send_signal(signal.SIGUSR2),
        )
        if args.profile:
            shutil.copyfile(stats, args.profile)
        counted = call_counts(pstats.Stats(stats), args.sessions * args.chunks, LAYERS, charge_callers=True)
    print(_measured_header(args, done, requests))
    print_calls(
        {"worker": counted},
        "cProfile of `memalpha worker`'s event loop thread, the policy call included",
        top="most_called",
    )


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (its threads included), from /proc."""
    # The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_chunk(args: argparse.Namespace, texts: list[str]) -> None:
    cpu: list[float] = []
    done, requests = measured_run(
        args,
        texts,
        ["app.cli"],
        lambda worker: cpu.append(process_cpu_s(worker.pid)),
        lambda worker: cpu.append(process_cpu_s(worker.pid)),
    )
    print(_measured_header(args, done, requests))
    print(f"  worker process CPU per measured chunk: {(cpu[1] - cpu[0]) * 1000 / done:.2f} ms")


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
    parser.add_argument(
        "--latency-spread",
        type=float,
        default=0.0,
        help="each chunk's latency uniform in delay x (1 +- spread), drawn from a hash of the chunk",
    )
    parser.add_argument("--timeout-s", type=float, default=600)
    parser.add_argument(
        "--profile-calls", action="store_true", help="count Python calls per chunk instead of timing"
    )
    parser.add_argument("--profile", type=Path, help="with --profile-calls: write the worker's cProfile here")
    parser.add_argument(
        "--cpu-clock",
        action="store_true",
        help="with --profile-calls: time functions by the thread's CPU clock (waits and preemption left out)",
    )
    parser.add_argument(
        "--cpu-per-chunk",
        action="store_true",
        help="the worker process's CPU seconds per chunk instead of chunks/s (as --profile-calls, unprofiled)",
    )
    args = parser.parse_args()
    texts = load_pool(args.data_dir).paragraphs
    if (args.profile or args.cpu_clock) and not args.profile_calls:
        parser.error("--profile and --cpu-clock need --profile-calls")
    if args.profile_calls:
        profile_calls(args, texts)
        return
    if args.cpu_per_chunk:
        cpu_per_chunk(args, texts)
        return
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
                run = run_config(args, texts, processes, delay_ms / 1000, concurrency)
                rates[processes] = run.done / run.span_s if run.span_s else float("inf")
                print(
                    f"  policy latency {delay_ms:5.0f} ms, concurrency {concurrency:4d}, {processes} process(es): "
                    f"{run.done} chunks done in {run.span_s:6.1f} s = {rates[processes]:6.1f} chunks/s; "
                    f"policy calls in flight {run.in_flight:5.1f} on average, claim to done {run.worker_s * 1000:5.0f} ms, "
                    f"worker CPU {run.worker_cpu:4.0%} of a core per process"
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
