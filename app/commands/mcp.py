"""`memalpha mcp`: an MCP server over stdio for desktop agents, forwarding its tools to a running memalpha
service over HTTP (the Python client). The service itself also serves MCP at `/mcp` (streamable HTTP)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mcp",
        help="MCP server over stdio, backed by a memalpha service",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the memalpha service")
    parser.add_argument(
        "--key",
        default=os.environ.get("MEMALPHA_API_KEY"),
        help="API key (default: $MEMALPHA_API_KEY; none for a loopback service with auth off)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import anyio

    from app.client import AsyncMemoryClient
    from app.client._base import client_version

    try:
        from app.mcp.tools import build_server
    except ModuleNotFoundError as missing:
        if missing.name is None or not missing.name.startswith("mcp"):
            raise
        print("memalpha mcp: the MCP SDK is missing; pip install 'memalpha[mcp]'", file=sys.stderr)
        return 2

    async def serve() -> None:
        async with AsyncMemoryClient(args.url, args.key) as client:
            await build_server(lambda: client, version=client_version()).run_stdio_async()

    anyio.run(serve)
    return 0
