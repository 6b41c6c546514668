"""Ingestion at the facade: seqs, ordering under concurrency, idempotency, splitting, exactly-once
effects, validation that changes nothing, `wait` semantics. On SQLite and Postgres, extractive policy."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any

import pytest
from conftest import running_api, service_settings
from scripted_llm import Delay, Echo, ScriptedLLM
from sqlalchemy import event, select, update
from store_helpers import assert_exactly_once, chunk_rows, openai_policy, running, settle, until

from app.errors import BadRequest, PayloadTooLarge
from app.service import ChunkIn
from app.store.models import Session
from app.store.types import utcnow

T = "tenant-a"


def fact(n: int) -> str:
    return f"Fact {n}: Zorg{n} owns {n} red boats."


async def test_seqs_in_order_with_operations(store_url: str) -> None:
    async with running(store_url) as service:
        outcome = await service.ingestion.ingest(T, "s1", [ChunkIn(fact(n)) for n in range(1, 6)], wait=True)
        assert outcome.complete
        assert [c.seq for c in outcome.chunks] == [1, 2, 3, 4, 5]
        assert all(c.status == "done" and not c.duplicate for c in outcome.chunks)
        assert [c.operations[0].content for c in outcome.chunks] == [fact(n) for n in range(1, 6)]
        assert all(
            c.operations[0].status == "ok" and c.operations[0].memory_type == "semantic"
            for c in outcome.chunks
        )
        memory = await service.memory.get_memory(T, "s1")
        assert [item.content for item in memory.semantic] == [fact(n) for n in range(1, 6)]
        assert [item.source_seq for item in memory.semantic] == [1, 2, 3, 4, 5]
        assert memory.version == 5
        await assert_exactly_once(service, T, "s1")


async def test_concurrent_ingest_to_one_session_keeps_order(store_url: str) -> None:
    async with running(store_url, workers=3) as service:
        outcomes = await asyncio.gather(
            *(service.ingestion.ingest(T, "busy", [ChunkIn(fact(n))], wait=n % 2 == 0) for n in range(1, 31))
        )
        seqs = sorted(o.chunks[0].seq for o in outcomes)
        assert seqs == list(range(1, 31))  # unique, gap-free
        await settle(service, T, "busy")
        rows = await chunk_rows(service, T, "busy")
        assert all(row.status == "done" for row in rows)
        done_at = [row.done_at for row in rows]
        assert done_at == sorted(done_at), "a later chunk finished before an earlier one"
        memory = await service.memory.get_memory(T, "busy")
        by_seq = {row.seq: row.content for row in rows}
        assert [item.content for item in memory.semantic] == [by_seq[s] for s in range(1, 31)]
        await assert_exactly_once(service, T, "busy")


async def test_a_request_without_keys_locks_and_places_the_session_in_one_statement(store_url: str) -> None:
    """The session's lock and new place are one UPDATE before the INSERT (a new session is created
    first), on Postgres one statement with the INSERT; a blocked session stays parked, blocked, and
    one in backoff keeps its ready time."""
    async with running(store_url, run_workers=False) as service:
        sent: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            sent.append(" ".join(statement.split()[:3]))

        event.listen(service.db.engine.sync_engine, "before_cursor_execute", record)
        await service.ingestion.ingest(T, "s", [ChunkIn(fact(1))], wait=False)  # creates the session
        sent.clear()
        first = await service.ingestion.ingest(T, "s", [ChunkIn(fact(n)) for n in (2, 3)], wait=False)
        if service.db.is_sqlite:
            assert [text for text in sent if text.split()[0] in ("UPDATE", "INSERT")] == [
                "UPDATE sessions SET",
                "INSERT INTO chunks",
            ]
        else:
            # `_ACCEPT`: the UPDATE and the INSERT (then the read of the answer)
            assert [text for text in sent if not text.startswith("SELECT")] == ["WITH reserved AS"]
        assert not [text for text in sent if text.startswith("SELECT sessions")]  # no locking read
        assert [c.seq for c in first.chunks] == [2, 3]
        later = utcnow() + timedelta(hours=1)
        async with service.db.write() as db:
            await db.execute(update(Session).values(blocked_by_seq=1, ready_at=None))
        blocked = await service.ingestion.ingest(T, "s", [ChunkIn(fact(4))], wait=False)
        async with service.db.read() as db:
            parked = (await db.execute(select(Session.blocked_by_seq, Session.ready_at))).one()
        async with service.db.write() as db:
            await db.execute(update(Session).values(blocked_by_seq=None, ready_at=later))
        await service.ingestion.ingest(T, "s", [ChunkIn(fact(5))], wait=False)
        async with service.db.read() as db:
            waiting = (await db.execute(select(Session.ready_at, Session.next_seq))).one()
    assert [c.seq for c in blocked.chunks] == [4] and tuple(parked) == (1, None)
    assert tuple(waiting) == (later, 6)


async def test_idempotency_key_dedupes_within_and_across_requests(store_url: str) -> None:
    async with running(store_url) as service:
        first = await service.ingestion.ingest(
            T,
            "idem",
            [
                ChunkIn(fact(1), idempotency_key="k1"),
                ChunkIn(fact(2), idempotency_key="k2"),
                ChunkIn(fact(1), idempotency_key="k1"),
            ],
            wait=True,
        )
        assert [(c.seq, c.duplicate) for c in first.chunks] == [(1, False), (2, False), (1, True)]
        replay = await service.ingestion.ingest(
            T, "idem", [ChunkIn(fact(2), idempotency_key="k2"), ChunkIn(fact(3))], wait=True
        )
        assert [(c.seq, c.duplicate, c.status) for c in replay.chunks] == [
            (2, True, "done"),
            (3, False, "done"),
        ]
        # The replay reports the original chunk's operations, and applied nothing again.
        assert replay.chunks[0].operations == first.chunks[1].operations
        session = await service.sessions.get_session(T, "idem")
        assert session.next_seq == 4 and session.chunks["done"] == 3
        assert len((await service.memory.get_memory(T, "idem")).semantic) == 3
        await assert_exactly_once(service, T, "idem")


async def test_oversized_input_is_split_and_replays_as_a_whole(store_url: str) -> None:
    text = " ".join(fact(n) for n in range(1, 13))  # 12 sentences, 10 word-tokens each
    async with running(store_url, max_chunk_tokens=40) as service:
        outcome = await service.ingestion.ingest(
            T, "long", [ChunkIn(text, idempotency_key="book")], wait=True
        )
        assert len(outcome.chunks) == 3 and [c.seq for c in outcome.chunks] == [1, 2, 3]
        rows = await chunk_rows(service, T, "long")
        assert [row.part for row in rows] == [0, 1, 2]
        assert " ".join(row.content for row in rows) == text
        replay = await service.ingestion.ingest(T, "long", [ChunkIn(text, idempotency_key="book")], wait=True)
        assert [(c.seq, c.duplicate) for c in replay.chunks] == [(1, True), (2, True), (3, True)]


@pytest.mark.parametrize(
    ("chunks", "session_id", "error"),
    [
        ([ChunkIn("fine"), ChunkIn("   ")], "s", BadRequest),  # one empty chunk spoils the request
        ([ChunkIn("fine"), ChunkIn("x" * 2001)], "s", PayloadTooLarge),
        ([ChunkIn("fine"), ChunkIn("bad \ud800 surrogate")], "s", BadRequest),
        ([ChunkIn("fine"), ChunkIn("nul \x00 inside")], "s", BadRequest),
        ([ChunkIn("fine", metadata={"x": "\x00"})], "s", BadRequest),
        ([], "s", BadRequest),
        ([ChunkIn("fine")], "x" * 129, BadRequest),
        ([ChunkIn("fine")], "has space", BadRequest),
    ],
)
async def test_bad_input_changes_nothing(
    store_url: str, chunks: list[ChunkIn], session_id: str, error: type[Exception]
) -> None:
    async with running(store_url, max_chunk_bytes=2000) as service:
        with pytest.raises(error):
            await service.ingestion.ingest(T, session_id, chunks, wait=True)
        assert await service.sessions.list_sessions(T) == []


async def test_wait_times_out_with_pending_then_completes(store_url: str) -> None:
    async with running(store_url, run_workers=False, ingest_wait_timeout_s=0.2) as service:
        outcome = await service.ingestion.ingest(T, "later", [ChunkIn(fact(1)), ChunkIn(fact(2))], wait=True)
        assert not outcome.complete
        assert [(c.seq, c.status, c.operations) for c in outcome.chunks] == [
            (1, "pending", []),
            (2, "pending", []),
        ]
        queued = await service.ingestion.ingest(T, "later", [ChunkIn(fact(3))], wait=False)
        assert not queued.complete and queued.chunks[0].status == "pending"
    async with running(store_url) as service:  # a restart with workers finds the queued chunks
        await settle(service, T, "later")
        assert [row.status for row in await chunk_rows(service, T, "later")] == ["done"] * 3
        await assert_exactly_once(service, T, "later")


async def test_pending_gauge_counts_open_chunks(store_url: str) -> None:
    from prometheus_client import REGISTRY

    def pending() -> float | None:
        return REGISTRY.get_sample_value("memalpha_pending_chunks")

    async with running(store_url, run_workers=False) as service:
        await service.ingestion.ingest(T, "gauge", [ChunkIn(fact(n)) for n in range(3)], wait=False)
        await until(lambda: pending() == 3)
    async with running(store_url) as service:
        await settle(service, T, "gauge")
        await until(lambda: pending() == 0)


async def test_a_busy_session_does_not_starve_others(store_url: str) -> None:
    from app.ingest.worker import CHUNKS_PER_CLAIM

    backlog = CHUNKS_PER_CLAIM + 8
    async with running(store_url, workers=1) as service:
        await service.ingestion.ingest(T, "busy", [ChunkIn(fact(n)) for n in range(backlog)], wait=False)
        await service.ingestion.ingest(T, "quiet", [ChunkIn(fact(1000))], wait=False)
        busy, [quiet] = await settle(service, T, "busy"), await settle(service, T, "quiet")
        assert quiet.done_at is not None and busy[-1].done_at is not None
        assert quiet.done_at < busy[-1].done_at  # the worker handed "busy" back after its share


def _most_in_flight(llm: ScriptedLLM) -> int:
    """The largest number of policy requests the scripted server was answering at one moment."""
    edges = sorted(
        [(r.started, 1) for r in llm.requests] + [(r.finished or float("inf"), -1) for r in llm.requests],
        key=lambda edge: (edge[0], edge[1]),  # a reply sent before a request arrives at the same instant
    )
    most = current = 0
    for _, change in edges:
        current += change
        most = max(most, current)
    return most


async def test_policy_calls_of_many_sessions_run_at_once_up_to_the_bound_each_in_order(
    store_url: str,
) -> None:
    """One claim loop, concurrency 6, 10 sessions: 6 policy calls in flight (not 1, not 10), and the
    chunks of every session still proposed one after another in seq order, each applied once."""
    sessions, per_session, concurrency = 10, 2, 6
    # Replies slow enough that every free slot is claimed while the first calls are still out.
    with ScriptedLLM(default=Delay(1.0, Echo())) as llm:
        overrides = openai_policy(llm, workers=1, policy_concurrency=concurrency, poll_interval_s=0.05)
        async with running(store_url, **overrides) as service:
            texts = {
                f"s{n}": [f"{fact(10 * n + i)} (session s{n})" for i in range(per_session)]
                for n in range(sessions)
            }
            for session_id, chunk_texts in texts.items():
                await service.ingestion.ingest(
                    T, session_id, [ChunkIn(text) for text in chunk_texts], wait=False
                )
            for session_id, chunk_texts in texts.items():
                await settle(service, T, session_id)
                memory = await service.memory.get_memory(T, session_id)
                assert [item.content for item in memory.semantic] == chunk_texts
                await assert_exactly_once(service, T, session_id)
        assert _most_in_flight(llm) == concurrency
        for chunk_texts in texts.values():
            asked = [r for r in llm.requests if r.chunk in chunk_texts]
            assert [r.chunk for r in asked] == chunk_texts
            assert all(
                before.finished is not None and before.finished <= after.started
                for before, after in itertools.pairwise(asked)
            ), "two chunks of one session were with the policy at once"


async def test_ingest_past_the_backlog_bound_is_429_with_retry_after_and_writes_nothing(
    store_url: str,
) -> None:
    settings = service_settings(store_url, run_workers=False, ingest_max_backlog=3, poll_interval_s=0.05)
    async with running_api(settings) as api:
        headers = await api.tenant()
        accepted = await api.client.post(
            "/sessions/s/ingest", json={"chunks": [fact(1), fact(2)], "wait": False}, headers=headers
        )
        assert accepted.status_code == 202, accepted.text
        refused = await api.client.post(
            "/sessions/s/ingest", json={"chunks": [fact(3), fact(4)], "wait": False}, headers=headers
        )
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["code"] == "backlog_full" and error["details"]["max_backlog"] == 3
        chunks = (await api.client.get("/sessions/s/chunks", headers=headers)).json()["chunks"]
        assert [c["seq"] for c in chunks] == [1, 2]
        # One more fits; the recount (every poll interval) sees the same backlog in the database.
        await asyncio.sleep(0.2)
        assert api.service.queue.backlog == 2
        one = await api.client.post(
            "/sessions/s/ingest", json={"chunks": [fact(3)], "wait": False}, headers=headers
        )
        assert one.status_code == 202, one.text
