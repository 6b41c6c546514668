"""`memalpha worker`: ingestion workers without the HTTP server (scale-out next to `serve --no-workers`
or `MEMALPHA_RUN_WORKERS=false`). Runs until SIGINT/SIGTERM; chunks in flight then get
`MEMALPHA_SHUTDOWN_GRACE_S` to commit, and go back to pending for the next worker after it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worker", help="run ingestion workers only", description=__doc__)
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: MEMALPHA_DATABASE_URL)")
    parser.add_argument("--workers", type=int, help="claim loops in this process (default: MEMALPHA_WORKERS)")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="sessions (policy calls) in flight in this process (default: MEMALPHA_POLICY_CONCURRENCY)",
    )
    parser.add_argument(
        "--policy-url", help="OpenAI-compatible base URL of the policy model (backend `openai`)"
    )
    parser.add_argument("--policy-model", help="served model name of the policy")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (MEMALPHA_WORKER_METRICS_PORT)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.settings import Settings
    from app.store.schema import SchemaNotReady

    values: dict[str, Any] = {
        "database_url": args.database_url,
        "workers": args.workers,
        "policy_concurrency": args.concurrency,
        "policy_url": args.policy_url,
        "policy_model": args.policy_model,
        "worker_metrics_port": args.metrics_port,
    }
    if args.policy_url:
        values["policy_backend"] = "openai"
    try:
        settings = Settings(**{key: value for key, value in values.items() if value is not None})
    except ValueError as exc:
        print(f"memalpha worker: invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.workers < 1:
        print("memalpha worker: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        run_loop(_serve(settings))
    except SchemaNotReady as exc:
        print(f"memalpha worker: {exc}", file=sys.stderr)
        return 2
    return 0


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop where it is installed, as `memalpha serve` does (uvicorn's loop "auto"): the
    pure-Python selector loop was a fifth of a worker's Python calls per chunk (docs/results/benchmarks.md (v))."""
    try:
        import uvloop
    except ImportError:  # the platforms where uvicorn[standard] does not install it
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _serve(settings: Any) -> None:
    from prometheus_client import start_http_server

    from app.service import MemoryService

    service = MemoryService(settings)
    await service.start(run_workers=True)
    metrics = None
    if settings.worker_metrics_port is not None:
        metrics, _ = start_http_server(settings.worker_metrics_port, addr=settings.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    logging.getLogger("memalpha.worker").info(
        "%d claim loops, %d sessions in flight at most, on %s; policy %s; metrics %s; event loop %s",
        settings.workers,
        settings.policy_concurrency,
        service.db.safe_url,
        service.policy.name,
        f"http://{settings.host}:{settings.worker_metrics_port}/metrics" if metrics else "off",
        type(loop).__module__.split(".")[0],
    )
    try:
        workers = asyncio.ensure_future(service.run_workers_until_stopped())
        await asyncio.wait([workers, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if metrics is not None:
            metrics.shutdown()
        await service.stop()
