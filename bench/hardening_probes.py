"""The hardening probes of issue 14 against a real `memalpha serve` process: per probe the HTTP status,
whether the body has the JSON error shape, and whether the caller-visible state changed.

State = the session list, and per session its memory, chunk log and audit log (ids and contents).
Run it on any checkout (`--src`) to compare before/after:

    python -m bench.hardening_probes --src . --database sqlite --out /tmp/after-sqlite.json
    python -m bench.hardening_probes --src /tmp/base --database postgres --out /tmp/before-pg.json
    python -m bench.hardening_probes --compare /tmp/before-pg.json /tmp/after-pg.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.pg import scratch_database

BIG = 9223372036854775808  # 2**63: one past BIGINT
HUGE = 10**23


@dataclass
class Probe:
    name: str
    status: int | str  # an HTTP status, or what happened instead ("reset")
    json_error: bool
    state_changed: bool
    note: str = ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(src: Path, database_url: str, workdir: Path) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMALPHA_")}
    env |= {"PYTHONPATH": str(src), "MEMALPHA_DATABASE_URL": database_url, "MEMALPHA_AUTO_MIGRATE": "true"}
    log = (workdir / f"serve-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _state(client: httpx.Client) -> str:
    sessions = client.get("/sessions", params={"limit": 1000}).json()["sessions"]
    parts: list[Any] = [sorted((s["id"], s["version"], s["next_seq"]) for s in sessions)]
    for session in sorted(s["id"] for s in sessions):
        memory = client.get(f"/sessions/{session}/memory").json()
        memory.pop("tokens", None)
        chunks = client.get(f"/sessions/{session}/chunks", params={"limit": 1000}).json()["chunks"]
        operations = client.get(f"/sessions/{session}/operations", params={"limit": 1000}).json()
        parts += [memory, [(c["seq"], c["status"], c["content"]) for c in chunks], operations]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _json_error(body: bytes) -> bool:
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and {"code", "message"} <= error.keys()


def _raw(url: str, request: bytes, *, timeout: float = 60) -> tuple[int | str, bytes, float]:
    """Send bytes, read the answer: (status or what happened instead, body, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        try:
            connection.sendall(request)
            connection.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := connection.recv(65536):
                data += chunk
        except ConnectionResetError:
            return "reset", b"", time.perf_counter() - started
        except BrokenPipeError:
            return "reset (broken pipe)", b"", time.perf_counter() - started
    if not data:
        return "closed", b"", time.perf_counter() - started
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body, time.perf_counter() - started


def _request(method: str, path: str, body: bytes = b"", headers: bytes = b"") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + headers
        + (b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body) if body else b"")
        + b"\r\n"
        + body
    )


def _export(**memory: Any) -> dict[str, Any]:
    return {"format": "memalpha.session.v1", "memory": {"core": "", **memory}}


class Prober:
    def __init__(self, url: str) -> None:
        self.url = url
        # No keep-alive: a 500 makes the server drop the connection under the next request.
        self.client = httpx.Client(
            base_url=url, timeout=120, limits=httpx.Limits(max_keepalive_connections=0)
        )
        self.results: list[Probe] = []

    def probe(self, name: str, send: Callable[[], tuple[int | str, bytes]], note: str = "") -> None:
        before = _state(self.client)
        status, body = send()
        self.results.append(Probe(name, status, _json_error(body), _state(self.client) != before, note))
        print(self.results[-1], flush=True)

    def http(self, method: str, path: str, **kwargs: Any) -> Callable[[], tuple[int | str, bytes]]:
        def send() -> tuple[int | str, bytes]:
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                return f"transport error: {type(exc).__name__}", b""
            return response.status_code, response.content

        return send

    def raw(self, request: bytes) -> Callable[[], tuple[int | str, bytes]]:
        def send() -> tuple[int | str, bytes]:
            status, body, _ = _raw(self.url, request)
            return status, body

        return send


def _healthz_gap(url: str, work: Callable[[], None]) -> float:
    """The longest /healthz round trip (s) while `work` runs in another thread."""
    done = threading.Event()
    worst = 0.0

    def poll() -> None:
        nonlocal worst
        with httpx.Client(base_url=url, timeout=120) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.get("/healthz")
                worst = max(worst, time.perf_counter() - started)
                time.sleep(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        work()
    finally:
        done.set()
        poller.join()
    return worst


def run(url: str, database: str) -> list[Probe]:
    p = Prober(url)
    c = p.client
    assert c.post("/sessions/s/ingest", json={"chunks": ["Ivy moved to Porto in 2020."]}).status_code == 200
    ingest = "/sessions/s/ingest"

    # --- integers beyond the columns, extreme timestamps ---
    p.probe("GET /sessions?offset=2^63", p.http("GET", "/sessions", params={"offset": BIG}))
    p.probe("GET /chunks?after_seq=2^63", p.http("GET", "/sessions/s/chunks", params={"after_seq": BIG}))
    p.probe(
        "GET /operations?after_id=2^63", p.http("GET", "/sessions/s/operations", params={"after_id": BIG})
    )
    p.probe("POST /chunks/2^63/retry", p.http("POST", f"/sessions/s/chunks/{BIG}/retry"))
    for field in ("version", "next_item"):
        p.probe(
            f"import memory.{field}=1e23",
            p.http("POST", "/sessions/i1/import", json=_export(**{field: HUGE})),
        )
    chunk = {"seq": 1, "content": "x", "status": "done"}
    for field, value in (("seq", HUGE), ("attempts", HUGE), ("part", 2**31)):
        payload = _export() | {"chunks": [chunk | {field: value}]}
        p.probe(f"import chunks[].{field}={value:.0e}", p.http("POST", "/sessions/i2/import", json=payload))
    item = {"id": "a1", "content": "x", "source_seq": HUGE}
    p.probe(
        "import item source_seq=1e23", p.http("POST", "/sessions/i3/import", json=_export(semantic=[item]))
    )
    for stamp in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"):
        body = {"chunks": [{"content": "x", "timestamp": stamp}]}
        p.probe(f"ingest timestamp {stamp}", p.http("POST", ingest, json=body))
        item = {"id": "a1", "content": "x", "created_at": stamp}
        p.probe(
            f"import created_at {stamp}", p.http("POST", "/sessions/i4/import", json=_export(semantic=[item]))
        )

    # --- misspelt fields, invisible content ---
    p.probe("ingest misspelt `wiat`", p.http("POST", ingest, json={"chunks": ["a b"], "wiat": False}))
    body = {"chunks": [{"content": "c d", "idempotency_ky": "k1"}]}
    p.probe("ingest misspelt `idempotency_ky`", p.http("POST", ingest, json=body))
    p.probe("ingest zero-width-only chunk", p.http("POST", ingest, json={"chunks": ["\u200b\u200c\u2060"]}))

    # --- the front end ---
    long_q = "where " * 12_000  # ~72 KB
    p.probe(
        "GET /answer?q= 72 KB", p.raw(_request("GET", "/sessions/s/answer?q=" + long_q.replace(" ", "+")))
    )
    p.probe("POST /answer 72 KB question", p.http("POST", "/sessions/s/answer", json={"q": long_q}))
    p.probe("1 MB session id", p.raw(_request("POST", "/sessions/" + "s" * 1_000_000 + "/ingest", b"{}")))
    header = b"X-Big: " + b"h" * 8_000_000 + b"\r\n"
    started = time.perf_counter()
    p.probe("8 MB header", p.raw(_request("GET", "/healthz", headers=header)))
    p.results[-1].note = f"{time.perf_counter() - started:.2f} s incl. state checks"
    over = b'{"chunks": ["' + b"a " * 4_000_001 + b'"]}'
    p.probe("body over max_request_bytes", p.raw(_request("POST", ingest, over)))
    p.probe("PATCH /ingest (405 Allow)", p.http("PATCH", ingest))
    p.results[-1].note = "Allow: " + c.request("PATCH", ingest).headers.get("allow", "-")

    # --- import without the id counter ---
    # Ids this service mints as its 3rd and 4th (counter 2 and 3), without `next_item`.
    foreign = _export(
        semantic=[{"id": "xbt9", "content": "imported fact"}, {"id": "irf4", "content": "other"}]
    )
    p.probe("import foreign ids, then insert", p.http("POST", "/sessions/f/import", json=foreign))
    inserted = c.post("/sessions/f/memory/semantic", json={"content": "new fact"}).json()
    ops = c.get("/sessions/f/operations", params={"limit": 1000}).json()["operations"]
    ids = [op["memory_id"] for op in ops if "insert" in op["tool"]]
    kept = [i["content"] for i in c.get("/sessions/f/memory").json()["semantic"]]
    p.results[-1].note = f"new id {inserted.get('memory_id')}; inserts per id {ids}; memory {kept}"
    exported = c.get("/sessions/f/export", params={"include_operations": "true"}).json()
    p.results.append(
        Probe(
            "export carries the audit log",
            200,
            False,
            False,
            f"operations in export: {'operations' in exported}",
        )
    )

    # --- one request that freezes the loop, and the chunk-count cap ---
    sentence = "The quick brown fox jumps over the lazy dog near the river bank today. "
    megabyte = (sentence * (1_000_000 // len(sentence)))[:999_000]

    def one_mb() -> None:
        response = c.post("/sessions/big/ingest", json={"chunks": [megabyte], "wait": False}, timeout=600)
        p.results.append(
            Probe("1 MB chunk (wait=false)", response.status_code, _json_error(response.content), True)
        )

    gap = _healthz_gap(url, one_mb)
    p.results[-1].note = f"worst /healthz round trip {gap * 1000:.0f} ms"
    print(p.results[-1], flush=True)
    deadline = time.monotonic() + 300  # let the workers finish, so that the next probe sees a still state
    while time.monotonic() < deadline:
        session = c.get("/sessions/big").json()
        if session["chunks"]["done"] + session["chunks"]["failed"] == session["next_seq"] - 1:
            break
        time.sleep(1)
    count = 70_000 if database == "postgres" else 250_001
    many = {"chunks": ["a"] * count, "wait": False}
    p.probe(f"{count} chunks in one request", p.http("POST", "/sessions/many/ingest", json=many, timeout=600))
    return p.results


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| probe | status | JSON error | state changed | note |", "|---|---|---|---|---|"]
    for r in results:
        rows.append(
            f"| {r['name']} | {r['status']} | {'yes' if r['json_error'] else 'no'} | "
            f"{'yes' if r['state_changed'] else 'no'} | {r['note']} |"
        )
    return "\n".join(rows)


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """One row per probe: before and after (status / JSON error shape / state changed)."""

    def cell(r: dict[str, Any]) -> str:
        shape, changed = "yes" if r["json_error"] else "no", "yes" if r["state_changed"] else "no"
        return f"{r['status']} / {shape} / {changed}"

    rows = [
        "| probe | before: status / JSON error / state changed | after | after: note |",
        "|---|---|---|---|",
    ]
    was = {r["name"]: r for r in before}
    for r in after:
        b = was.get(r["name"])
        old = (cell(b) + (f" ({b['note']})" if b["note"] else "")) if b else "—"
        rows.append(f"| {r['name']} | {old} | {cell(r)} | {r['note']} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--src", type=Path, default=Path("."), help="checkout whose `app` to serve")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--out", type=Path, help="where the results go (JSON)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"), help="print the table")
    args = parser.parse_args()
    if args.compare:
        print(compare(*(json.loads(path.read_text()) for path in args.compare)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.database == "sqlite":
            with serve(args.src.resolve(), f"sqlite+aiosqlite:///{workdir}/probe.db", workdir) as url:
                results = run(url, "sqlite")
        else:
            with (
                scratch_database() as (database_url, _),
                serve(args.src.resolve(), database_url, workdir) as url,
            ):
                results = run(url, "postgres")
    data = [asdict(r) for r in results]
    if args.out:
        args.out.write_text(json.dumps(data, indent=1))
    print(table(data))


if __name__ == "__main__":
    main()
