"""Ingestion across processes: `memalpha worker` as a real process next to a service without
workers (SQLite: cross-process write locking; Postgres: SKIP LOCKED), and Postgres LISTEN/NOTIFY
waking workers and waiters of another process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest
from store_helpers import assert_exactly_once, running, settle

from app.service import ChunkIn

T = "tenant-p"


async def test_worker_command_processes_chunks_accepted_by_another_process(store_url: str) -> None:
    env = {
        **os.environ,
        "MEMALPHA_DATABASE_URL": store_url,
        "MEMALPHA_WORKERS": "2",
        "MEMALPHA_POLL_INTERVAL_S": "0.05",
    }
    env.pop("MEMALPHA_AUTO_MIGRATE", None)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "worker", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        async with running(store_url, run_workers=False, ingest_wait_timeout_s=60.0) as service:
            texts = [f"Fact {n}: Zorg{n} owns {n} red boats." for n in range(1, 9)]
            outcomes = await asyncio.gather(
                *(
                    service.ingestion.ingest(T, f"s{n % 2}", [ChunkIn(text)], wait=True)
                    for n, text in enumerate(texts)
                )
            )
            assert all(o.complete and o.chunks[0].status == "done" for o in outcomes)
            for session_id in ("s0", "s1"):
                await settle(service, T, session_id)
                await assert_exactly_once(service, T, session_id)
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(worker.communicate(), timeout=30)
    assert worker.returncode == 0, output.decode()


@pytest.mark.postgres
async def test_notifications_wake_workers_and_waiters_of_other_processes(migrated_pg_url: str) -> None:
    # Polling so slow that only LISTEN/NOTIFY can finish the request within its wait timeout.
    slow = {"poll_interval_s": 30.0, "ingest_wait_timeout_s": 10.0}
    async with running(migrated_pg_url, run_workers=False, **slow) as api, running(migrated_pg_url, **slow):
        await asyncio.sleep(0.5)  # both processes' LISTEN connections are up
        outcome = await api.ingestion.ingest(T, "s", [ChunkIn("Fact 1: Zorg owns red boats.")], wait=True)
        assert outcome.complete and outcome.chunks[0].status == "done"
