"""`memalpha serve` as a real process: the embedded default (SQLite in the working directory,
extractive policy and answerer, auth off on 127.0.0.1), auth on off loopback, refusal of auth=off off
loopback, and a 1 MB session id on the wire."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import ServeProcess

pytestmark = pytest.mark.timeout(120)


def _raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        return connection.recv(4096)


def test_embedded_default(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, {})
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.post("/sessions/demo/ingest", json={"chunks": ["Ivy moved to Porto in 2020."]})
            assert response.status_code == 200, response.text  # no key needed on loopback
            answer = client.get("/sessions/demo/answer", params={"q": "Where did Ivy move?"}).json()
            assert "Porto" in answer["answer"] and answer["model"] == "extractive"
            assert client.get("/policy").json()["backend"] == "extractive"
            before = client.get("/sessions").json()

            # 1 MB of session id: the HTTP server refuses the request line itself (a 4xx before the app).
            head = _raw_request(
                server.port,
                b"POST /sessions/" + b"s" * 1_000_000 + b"/ingest HTTP/1.1\r\n"
                b"Host: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            )
            assert head.startswith(b"HTTP/1.1 4"), head[:200]
            assert client.get("/sessions").json() == before
        assert (tmp_path / "memalpha.db").exists(), (
            "the embedded default keeps its SQLite file in the working directory"
        )
    finally:
        server.stop()


def test_auth_is_on_off_loopback(tmp_path: Path) -> None:
    key = "ma_bootstrap-key-for-this-test-0123456789"
    server = ServeProcess(
        tmp_path, {"MEMALPHA_BOOTSTRAP_API_KEY": key, "MEMALPHA_BOOTSTRAP_TENANT": "ops"}, host="0.0.0.0"
    )
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.get("/sessions")
            assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
            assert (
                client.get("/sessions", headers={"Authorization": f"Bearer {key}"}).json()["sessions"] == []
            )
            assert client.get("/healthz").status_code == 200
    finally:
        server.stop()


def test_auth_off_is_refused_off_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--host", "0.0.0.0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "MEMALPHA_AUTH": "off",
            "PYTHONPATH": str(Path(__file__).parent.parent),
        },
    )
    assert result.returncode == 2, result.stderr
    assert "only allowed when bound to 127.0.0.1" in result.stderr
