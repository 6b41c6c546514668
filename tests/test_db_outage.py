"""A real database outage: a private PostgreSQL server (started for this test on a free port in a temp
directory, never the shared one) is stopped under a running `memalpha serve`. Every request that needs
the database gets a JSON 503 with `Retry-After` on the same keep-alive connection, liveness stays up,
the log says so once (no traceback per request), and after the restart everything works again with
nothing lost."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServeProcess, free_port
from llm_server import must_not_skip

pytestmark = [pytest.mark.timeout(300), pytest.mark.postgres]


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bindirs or os.geteuid() != 0 or shutil.which("runuser") is None:
            message = (
                "a private PostgreSQL needs Debian's server binaries and root (to run them as `postgres`)"
            )
            if must_not_skip():
                pytest.fail(message)
            pytest.skip(f"SKIPPING THE OUTAGE TEST: {message}")
        self.bin, self.data, self.port = Path(bindirs[-1]), root / "pgdata", free_port()
        self.data.mkdir()
        shutil.chown(self.data, "postgres")
        self._as_postgres("initdb", "--no-sync", "-A", "trust", "-U", "postgres", "-D", str(self.data))
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.data}"
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.data / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    # Not under pytest's tmp_path: the `postgres` user cannot enter root's private temp tree.
    root = Path(tempfile.mkdtemp(prefix="memalpha-outage-"))
    root.chmod(0o755)
    server = PrivatePostgres(root)
    server.start()
    try:
        yield server
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(server.bin / "pg_ctl"),
                "-D",
                str(server.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def test_outage_answers_503_and_logs_once(tmp_path: Path, private_pg: PrivatePostgres) -> None:
    server = ServeProcess(
        tmp_path,
        {
            "MEMALPHA_DATABASE_URL": private_pg.url,
            "MEMALPHA_AUTO_MIGRATE": "true",
            "MEMALPHA_LOG_LEVEL": "INFO",
        },
    )
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            fact = "Ivy moved to Porto in 2020."
            assert client.post("/sessions/s/ingest", json={"chunks": [fact]}).status_code == 200
            memory = client.get("/sessions/s/memory").json()

            private_pg.stop()
            requests = [
                ("GET", "/sessions", None),
                ("GET", "/sessions/s/memory", None),
                ("POST", "/sessions/s/ingest", {"chunks": ["Ivy likes bacalhau."]}),
                ("GET", "/sessions/s/answer?q=Where+does+Ivy+live", None),
                ("PUT", "/sessions/s/memory/core", {"content": "Ivy, Porto."}),
            ]
            for round_ in range(10):
                for method, path, body in requests:
                    response = client.request(method, path, json=body)
                    assert response.status_code == 503, (round_, method, path, response.text)
                    assert response.json()["error"]["code"] == "database_unavailable"
                    assert response.headers["retry-after"] == "5"
                assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["error"]["details"]["database"] is False

            private_pg.start()
            deadline = time.monotonic() + 60
            while (response := client.get("/sessions/s/memory")).status_code != 200:
                assert time.monotonic() < deadline, response.text
                time.sleep(0.5)
            assert response.json() == memory  # nothing lost, nothing half-written
            assert (
                client.post("/sessions/s/ingest", json={"chunks": ["Ivy likes bacalhau."]}).status_code == 200
            )
        log = server.log.read_text(errors="replace")
        print("\n".join(line for line in log.splitlines() if "database" in line.lower()))
        assert log.count("database unavailable") == 1, log[-3000:]
        assert log.count("database available again") == 1, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    finally:
        server.stop()
