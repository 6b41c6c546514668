"""`memalpha worker`: ingestion workers without the HTTP server (scale-out next to `serve --no-workers`
or `MEMALPHA_RUN_WORKERS=false`). Runs until SIGINT/SIGTERM; a chunk in flight then goes back to
pending for the next worker."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worker", help="run ingestion workers only", description=__doc__)
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: MEMALPHA_DATABASE_URL)")
    parser.add_argument(
        "--workers", type=int, help="worker tasks in this process (default: MEMALPHA_WORKERS)"
    )
    parser.add_argument(
        "--policy-url", help="OpenAI-compatible base URL of the policy model (backend `openai`)"
    )
    parser.add_argument("--policy-model", help="served model name of the policy")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.settings import Settings
    from app.store.schema import SchemaNotReady

    values: dict[str, Any] = {
        "database_url": args.database_url,
        "workers": args.workers,
        "policy_url": args.policy_url,
        "policy_model": args.policy_model,
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
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(settings))
    except SchemaNotReady as exc:
        print(f"memalpha worker: {exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(settings: Any) -> None:
    from app.service import MemoryService

    service = MemoryService(settings)
    await service.start(run_workers=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    logging.getLogger("memalpha.worker").info(
        "%d workers on %s; policy %s", settings.workers, service.db.safe_url, service.policy.name
    )
    try:
        workers = asyncio.ensure_future(service.run_workers_until_stopped())
        await asyncio.wait([workers, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await service.stop()
