"""Test helper: the app under uvicorn on a free loopback port, in a thread with its own event loop, so
that blocking clients (the sync client, a browser, the MCP SDK) talk to it over real HTTP while the test
mints keys on the same service."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.types import ASGIApp

from app.main import create_app
from app.service import MemoryService
from app.settings import Settings

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiveServer:
    def __init__(self, app: ASGIApp) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name=f"uvicorn-{self.port}", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:  # tasks the app left (SDK session managers, waiters) end with the loop, not mid-GC
            leftover = asyncio.all_tasks(self.loop)
            for task in leftover:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            self.loop.close()

    def start(self, timeout: float = 60.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError(f"uvicorn on port {self.port} did not start")
            time.sleep(0.02)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the server's loop (the service's connections live there)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class LiveApi(LiveServer):
    """The memalpha app; `key()` mints an API key for a tenant on the running service."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.service = MemoryService(settings)
        super().__init__(create_app(settings, self.service))

    def key(self, tenant: str, *, admin: bool = False) -> str:
        return self.call(self.service.access.create_api_key(tenant, admin=admin))

    def get(self, path: str, key: str) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=60)


@contextmanager
def live(server: LiveServer) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
