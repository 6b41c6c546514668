"""Crash test: two `memalpha serve` processes with workers on one database, each with several sessions'
policy calls in flight at once, chunks ingested with wait=false, both processes killed with SIGKILL
while the policy is answering, then two restarted. Every accepted chunk must end `done` with its effects
exactly once: the scripted policy inserts each chunk's text once, so each chunk has exactly one
operation in `/operations` and memory holds the texts once, in seq order."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import ServeProcess
from scripted_llm import Delay, Echo, ScriptedLLM

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SESSIONS = ("north", "south", "east", "west", "upper", "lower")
REQUESTS_PER_SESSION, CHUNKS_PER_REQUEST = 3, 5
POLICY_DELAY_S = 0.5


def _env(database_url: str) -> dict[str, str]:
    return {
        "MEMALPHA_DATABASE_URL": database_url,
        "MEMALPHA_AUTO_MIGRATE": "true",
        "MEMALPHA_WORKERS": "2",
        "MEMALPHA_POLICY_CONCURRENCY": "4",
        "MEMALPHA_POLL_INTERVAL_S": "0.1",
        "MEMALPHA_LEASE_SECONDS": "2",
        "MEMALPHA_RETRY_BACKOFF_S": "0.1",
        "MEMALPHA_LOG_LEVEL": "warning",
    }


def _counts(client: httpx.Client) -> Counter[str]:
    total: Counter[str] = Counter()
    for session in SESSIONS:
        total.update(client.get(f"/sessions/{session}").raise_for_status().json()["chunks"])
    return total


def test_kill_9_mid_ingestion_loses_nothing_and_applies_once(empty_db_url: str, tmp_path: Path) -> None:
    llm = ScriptedLLM(default=Delay(POLICY_DELAY_S, Echo())).start()
    flags = ("--policy-url", llm.url, "--policy-model", llm.model, "--tool-format", "alpha")
    first = [ServeProcess(tmp_path, _env(empty_db_url), *flags)]
    second: list[ServeProcess] = []
    try:
        first[0].wait_healthy()  # it migrates the empty database; the peer starts on the migrated one
        first.append(ServeProcess(tmp_path, _env(empty_db_url), *flags))
        first[1].wait_healthy()
        accepted: dict[str, dict[int, str]] = {session: {} for session in SESSIONS}
        with httpx.Client(base_url=first[0].url, timeout=30) as client:
            for batch in range(REQUESTS_PER_SESSION):
                for session in SESSIONS:
                    texts = [
                        f"Ledger {session} entry {batch}-{i}: crate {batch * 10 + i} holds {session}ern spices."
                        for i in range(CHUNKS_PER_REQUEST)
                    ]
                    response = client.post(
                        f"/sessions/{session}/ingest", json={"chunks": texts, "wait": False}
                    )
                    assert response.status_code == 202, response.text
                    for chunk, text in zip(response.json()["chunks"], texts, strict=True):
                        accepted[session][chunk["seq"]] = text
            total = sum(len(seqs) for seqs in accepted.values())

            # Kill while the policy is answering several chunks at once (more than one per claim loop),
            # with some chunks done and most still to do.
            deadline = time.monotonic() + 60
            while not (_counts(client)["done"] >= 4 and sum(r.finished is None for r in llm.requests) >= 4):
                assert time.monotonic() < deadline, (
                    "the workers made no progress or ran one chunk at a time",
                    _counts(client),
                    [(r.started, r.finished) for r in llm.requests],
                )
                time.sleep(0.02)
            for process in first:
                process.kill()  # waits for the process to be gone
            # A reply sent while the processes were being killed may have been committed by the one
            # still alive; one sent after both were gone (or never) cannot have been.
            killed_at = time.monotonic()
        requests_before = len(llm.requests)
        # Replies not sent before the kill never reached a commit: those chunks must be proposed again.
        interrupted = {
            r.chunk for r in llm.requests[:requests_before] if r.finished is None or r.finished > killed_at
        }
        done_at_kill = len({r.chunk for r in llm.requests[:requests_before]} - interrupted)
        assert done_at_kill < total

        second = [ServeProcess(tmp_path, _env(empty_db_url), *flags) for _ in range(2)]
        for process in second:
            process.wait_healthy()
        with httpx.Client(base_url=second[0].url, timeout=30) as client:
            deadline = time.monotonic() + 120
            while (counts := _counts(client))["done"] + counts["failed"] < total:
                assert time.monotonic() < deadline, (counts, [p.output() for p in second])
                time.sleep(0.1)
            assert counts == Counter(done=total, pending=0, processing=0, failed=0)

            for session, texts in accepted.items():
                chunks = client.get(f"/sessions/{session}/chunks", params={"limit": 1000}).json()["chunks"]
                assert {c["seq"]: c["status"] for c in chunks} == {seq: "done" for seq in texts}
                operations = client.get(f"/sessions/{session}/operations", params={"limit": 1000}).json()[
                    "operations"
                ]
                per_chunk = Counter(op["chunk_seq"] for op in operations)
                assert per_chunk == Counter({seq: 1 for seq in texts}), (
                    f"{session}: operations per chunk {per_chunk}"
                )
                assert all(
                    op["status"] == "ok" and op["after"] == texts[op["chunk_seq"]] for op in operations
                )
                memory = client.get(f"/sessions/{session}/memory").json()
                assert [item["content"] for item in memory["semantic"]] == [
                    texts[seq] for seq in sorted(texts)
                ]
                assert [item["source_seq"] for item in memory["semantic"]] == sorted(texts)

        # The chunks the kill interrupted were proposed again after the restart, and applied once (above).
        asked_again = Counter(r.chunk for r in llm.requests[requests_before:])
        assert interrupted and all(asked_again[text] >= 1 for text in interrupted)
        print(
            f"\ncrash test: {total} chunks accepted, {done_at_kill} answered before SIGKILL, "
            f"{len(interrupted)} in flight at the kill, {len(llm.requests)} policy requests in all"
        )
    finally:
        for process in (*first, *second):
            process.stop()
        llm.stop()
