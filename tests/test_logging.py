"""Operators can see what happened: `memalpha serve` logs JSON lines on a non-terminal stderr at the
level `MEMALPHA_LOG_LEVEL` names, every response carries a request id (the caller's when sane), the
chunks a request accepted store it, and the worker's lines about those chunks carry it too."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServeProcess, free_port

pytestmark = pytest.mark.timeout(180)


def _lines(server: ServeProcess) -> list[dict[str, Any]]:
    out = []
    for line in server.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_json_logs_and_request_ids_reach_the_worker(tmp_path: Path) -> None:
    # A policy server that refuses connections: every chunk attempt fails, and the worker says so.
    server = ServeProcess(
        tmp_path,
        {
            "MEMALPHA_LOG_LEVEL": "INFO",
            "MEMALPHA_POLICY_BACKEND": "openai",
            "MEMALPHA_POLICY_URL": f"http://127.0.0.1:{free_port()}/v1",
            "MEMALPHA_POLICY_MAX_RETRIES": "0",
            "MEMALPHA_CHUNK_MAX_ATTEMPTS": "1",
        },
    )
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            given = {"X-Request-ID": "req-abc.123"}
            response = client.post(
                "/sessions/s/ingest", json={"chunks": ["Ivy moved."], "wait": False}, headers=given
            )
            assert response.status_code == 202 and response.headers["x-request-id"] == "req-abc.123"
            minted = client.get("/sessions/s", headers={"X-Request-ID": "not sane; " + "x" * 200}).headers[
                "x-request-id"
            ]
            assert len(minted) == 32
            assert client.get("/sessions/nope").headers["x-request-id"]  # errors carry one too
            deadline = time.monotonic() + 60
            while (chunk := client.get("/sessions/s/chunks").json()["chunks"][0])["status"] != "failed":
                assert time.monotonic() < deadline, chunk
                time.sleep(0.2)
            assert chunk["request_id"] == "req-abc.123"

        time.sleep(0.5)
        lines = _lines(server)
        assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
        tagged = [line for line in lines if line.get("request_id") == "req-abc.123"]
        assert any(line["logger"] == "uvicorn.access" for line in tagged), lines[-10:]
        assert any(
            line["logger"] == "app.ingest.worker" and "attempt 1 failed" in line["message"] for line in tagged
        ), [line for line in lines if line["logger"].startswith("app")]
        assert any(line["level"] == "INFO" and line["logger"].startswith("uvicorn") for line in lines)
    finally:
        server.stop()


def test_log_level_drops_info(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, {"MEMALPHA_LOG_LEVEL": "WARNING"})
    try:
        server.wait_healthy()
        assert httpx.get(f"{server.url}/sessions").status_code == 200
    finally:
        server.stop()
    assert not [line for line in _lines(server) if line["level"] == "INFO"]
