"""What `memalpha serve` answers before the app sees a request (real HTTP, raw sockets): over-long URLs
(414), over-large heads (431, refused as the bytes arrive, not after buffering them), bodies over
`max_request_bytes` (413 after the body is read, not a connection reset) and malformed requests (400),
all in the JSON error shape."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from conftest import ServeProcess

pytestmark = pytest.mark.timeout(180)


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, object], float]:
    """Send `request`, read the whole answer: (status, JSON body, seconds)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send: the answer is already waiting
        data = b""
        while chunk := connection.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), head
    answer = json.loads(body)
    # Every answer carries its request id, in the header and in the error body alike.
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert answer["error"]["request_id"] == headers[b"x-request-id"].decode(), (head, answer)
    return int(head.split(b" ")[1]), answer, time.perf_counter() - started


def _request(method: str, path: str, headers: bytes = b"", body: bytes = b"") -> bytes:
    length = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body) if body else b""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode()
        + headers
        + length
        + b"Connection: close\r\n\r\n"
        + body
    )


def test_front_end_refusals_are_json(tmp_path: Path) -> None:
    server = ServeProcess(tmp_path, {"MEMALPHA_MAX_REQUEST_BYTES": "200000"})
    try:
        server.wait_healthy()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert (
                client.post("/sessions/s/ingest", json={"chunks": ["Ivy lives in Porto."]}).status_code == 200
            )
            before = client.get("/sessions/s/chunks").json()

        status, body, _ = _exchange(server.port, _request("GET", "/sessions/s/answer?q=" + "where+" * 12_000))
        assert status == 414 and body["error"]["code"] == "uri_too_long", body  # type: ignore[index]
        status, body, _ = _exchange(
            server.port, _request("POST", "/sessions/" + "s" * 1_000_000 + "/ingest", body=b"{}")
        )
        assert status == 414, body

        header = b"X-Request-ID: probe-431\r\nX-Big: " + b"h" * 8_000_000 + b"\r\n"
        status, body, seconds = _exchange(server.port, _request("GET", "/healthz", headers=header))
        assert status == 431 and body["error"]["details"] == {"limit": 65536}, body  # type: ignore[index]
        assert body["error"]["request_id"] == "probe-431", body  # type: ignore[index]
        print(f"8 MB header refused in {seconds:.3f} s")

        over = b'{"chunks": ["' + b"a " * 150_000 + b'"]}'
        status, body, _ = _exchange(server.port, _request("POST", "/sessions/s/ingest", body=over))
        assert status == 413 and body["error"]["code"] == "payload_too_large", body  # type: ignore[index]

        status, body, _ = _exchange(server.port, b"GARBAGE / HTTP/1.1\r\n\r\n")
        assert status == 400 and body["error"]["code"] == "bad_request", body  # type: ignore[index]
        minted = body["error"]["request_id"]  # type: ignore[index]
        assert len(minted) == 32, body  # a new id: the request never got as far as its headers
        assert any(
            json.loads(line).get("request_id") == minted
            for line in server.log.read_text().splitlines()
            if line.startswith("{")
        ), server.output()

        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/sessions/s/chunks").json() == before
            assert client.get("/healthz").status_code == 200
    finally:
        server.stop()
