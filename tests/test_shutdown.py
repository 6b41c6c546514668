"""Graceful shutdown of `memalpha serve` (issue 14): SIGTERM in the middle of ingestion, on SQLite and on
Postgres, with a real policy server stand-in. The process exits within its bound
(`MEMALPHA_SHUTDOWN_GRACE_S` plus the few seconds of handing chunks back), leaves no chunk
`processing` (each is done or pending again, its interrupted attempt uncounted), answers the ingest
request that was waiting, and after a restart every accepted chunk is applied exactly once, in order.

Before the fix, the fast-policy case hung 60–120 s in some runs on SQLite: the workers were cancelled
inside write transactions, a connection kept SQLite's write lock, and handing each chunk back waited
the 30 s busy timeout and failed ("database is locked"), leaving the chunks `processing` until their
lease expired."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from conftest import ServeProcess
from scripted_llm import Delay, Echo, ScriptedLLM
from sqlalchemy import func, select
from store_helpers import assert_exactly_once, openai_policy, running, settle

from app.service import MemoryService
from app.store.models import Chunk

GRACE_S = 2
# After the grace period the workers get 5 s to hand their chunks back (app/ingest/pool.py); the
# rest is process start-up of the shutdown and exit on a loaded 2-core machine.
EXIT_BOUND_S = GRACE_S + 5 + 3
SESSIONS = 6
CHUNKS_PER_SESSION = 10
CONCURRENCY = 4
TENANT = "local"  # auth is off on loopback: every request is the local tenant's (app/api/deps.py)


async def _statuses(observer: MemoryService) -> dict[str, int]:
    async with observer.db.read() as db:
        rows = await db.execute(select(Chunk.status, func.count()).group_by(Chunk.status))
        return {str(status): int(count) for status, count in rows}


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(
    "policy_delay_s",
    [0.05, 60.0],
    ids=["in-flight-chunks-commit", "in-flight-chunks-handed-back"],
)
async def test_sigterm_mid_ingest_exits_within_the_bound_and_loses_no_chunk(
    store_url: str, tmp_path: Path, policy_delay_s: float
) -> None:
    with ScriptedLLM(default=Delay(policy_delay_s)) as llm:
        env = {
            "MEMALPHA_DATABASE_URL": store_url,
            "MEMALPHA_POLICY_BACKEND": "openai",
            "MEMALPHA_POLICY_URL": llm.url,
            "MEMALPHA_POLICY_MODEL": llm.model,
            "MEMALPHA_POLICY_MAX_RETRIES": "0",
            "MEMALPHA_POLICY_TIMEOUT_S": "300",
            "MEMALPHA_POLICY_CONCURRENCY": str(CONCURRENCY),
            "MEMALPHA_POLL_INTERVAL_S": "0.05",
            "MEMALPHA_SHUTDOWN_GRACE_S": str(GRACE_S),
        }
        serve = ServeProcess(tmp_path, env)
        async with running(store_url, run_workers=False) as observer, httpx.AsyncClient(timeout=120) as http:
            try:
                await asyncio.to_thread(serve.wait_healthy)
                accepted = 0
                for n in range(SESSIONS):
                    texts = [f"Fact {n}.{k}: Zorg{n} owns {k} red boats." for k in range(CHUNKS_PER_SESSION)]
                    body = {"chunks": texts, "wait": False}
                    response = await http.post(f"{serve.url}/sessions/s{n}/ingest", json=body)
                    assert response.status_code == 202, response.text
                    accepted += len(response.json()["chunks"])

                async def some_done() -> bool:
                    return (await _statuses(observer)).get("done", 0) >= 1

                async def slots_busy() -> bool:  # every slot holds a call that outlasts the grace period
                    return len(llm.requests) >= CONCURRENCY

                await _until(some_done if policy_delay_s < 1 else slots_busy, "ingestion did not start")
                # A request waiting for its chunk when the signal comes gets its answer, not a reset.
                body = {"chunks": ["Fact: Quux owns a kite."], "wait": True}
                waiting = asyncio.ensure_future(http.post(f"{serve.url}/sessions/waiting/ingest", json=body))
                accepted += 1

                async def waiting_accepted() -> bool:
                    return sum((await _statuses(observer)).values()) == accepted

                await _until(waiting_accepted, "the waiting ingest was not accepted")
                started = time.monotonic()
                serve.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(serve.process.wait, 180)
                elapsed = time.monotonic() - started
                print(f"exit {elapsed:.2f} s after SIGTERM ({serve.process.returncode})")
                answered = await waiting
            finally:
                serve.stop()
            log = serve.log.read_text(errors="replace")
            assert elapsed < EXIT_BOUND_S, f"exit took {elapsed:.1f} s:\n{serve.output()}"
            assert "database is locked" not in log and "Traceback" not in log, serve.output()
            assert answered.status_code in (200, 202), answered.text
            assert answered.json()["chunks"][0]["seq"] == 1

            statuses = await _statuses(observer)
            assert "processing" not in statuses and "failed" not in statuses, statuses
            assert sum(statuses.values()) == accepted, statuses
            assert statuses.get("pending", 0) > 0, statuses  # the signal did come mid-ingest

        llm.default = Echo()  # restarted: the rest is processed at once
        await _restart_and_settle(store_url, llm, accepted)


async def _restart_and_settle(url: str, llm: ScriptedLLM, accepted: int) -> None:
    async with running(url, **openai_policy(llm, policy_concurrency=CONCURRENCY)) as service:
        done = 0
        for session_id in [f"s{n}" for n in range(SESSIONS)] + ["waiting"]:
            rows = await settle(service, TENANT, session_id, timeout=120)
            assert [row.status for row in rows] == ["done"] * len(rows), session_id
            # Handed back means uncounted: every chunk took exactly one counted attempt.
            assert {row.attempts for row in rows} == {1}, (session_id, [row.attempts for row in rows])
            await assert_exactly_once(service, TENANT, session_id)
            done += len(rows)
        assert done == accepted
        await _no_duplicate_items(service)


async def _no_duplicate_items(service: MemoryService) -> None:
    for n in range(SESSIONS):
        contents = [item.content for item in (await service.state((TENANT, f"s{n}"))).semantic]
        assert len(contents) == len(set(contents)) == CHUNKS_PER_SESSION, (n, len(contents))
