"""`memalpha serve`: the HTTP API with in-process ingestion workers, under uvicorn.

Flags override the `MEMALPHA_*` settings; with none, it runs the embedded default (SQLite in the working
directory, extractive policy and answerer, auth off on 127.0.0.1)."""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any, get_args

from app.settings import ToolFormat


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP API and the ingestion workers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="bind address (default 127.0.0.1; auth turns on off loopback)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default sqlite+aiosqlite:///./memalpha.db)")
    parser.add_argument(
        "--policy-url",
        help="OpenAI-compatible base URL of the policy model (switches the "
        "policy backend to `openai`), e.g. http://127.0.0.1:8001/v1",
    )
    parser.add_argument("--policy-model", help="served model name of the policy")
    parser.add_argument("--tool-format", choices=get_args(ToolFormat), help="how the policy emits tool calls")
    parser.add_argument(
        "--answerer-url",
        help="OpenAI-compatible base URL of the answering model (switches the answerer backend to `openai`)",
    )
    parser.add_argument("--answerer-model", help="served model name of the answerer")
    parser.add_argument(
        "--no-workers", action="store_true", help="serve the API only; `memalpha worker` processes the chunks"
    )
    parser.set_defaults(func=run)


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags name; absent flags leave the `MEMALPHA_*` environment in charge."""
    values: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "database_url": args.database_url,
        "policy_url": args.policy_url,
        "policy_model": args.policy_model,
        "policy_tool_format": args.tool_format,
        "answerer_url": args.answerer_url,
        "answerer_model": args.answerer_model,
    }
    if args.policy_url:
        values["policy_backend"] = "openai"
    if args.answerer_url:
        values["answerer_backend"] = "openai"
    if args.no_workers:
        values["run_workers"] = False
    return {key: value for key, value in values.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.api.http_server import DrainingServer, limited_protocol
    from app.main import create_app
    from app.settings import Settings

    try:
        settings = Settings(**setting_overrides(args))
        app = create_app(settings)
    except ValueError as exc:  # pydantic's ValidationError included
        print(f"memalpha serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    # Everything loaded so far lives as long as the process: out of the collector's full passes, which
    # otherwise walk ~200k start-up objects and stall the event loop for hundreds of ms.
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # `memalpha` configured logging (app.logs); uvicorn's loggers propagate to it
        http=limited_protocol(settings.max_url_bytes, settings.max_header_bytes),
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    server = DrainingServer(config, on_shutdown=app.state.service.begin_shutdown)
    server.run()
    return 0 if server.started else 1
