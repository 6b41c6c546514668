"""The Python client (`app.client`) against the service over real HTTP (uvicorn on a free port)."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import httpx
import pytest
from live_server import LiveServer, live
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.client import (
    AsyncMemoryClient,
    AuthenticationError,
    BadRequestError,
    ChunkBody,
    ConflictError,
    MemalphaError,
    MemoryClient,
    NotFoundError,
    PermissionDeniedError,
    PolicyRegistration,
    RateLimitedError,
    RetryPolicy,
    UnavailableError,
    UnprocessableError,
)
from app.contracts.schemas import AnswerOut, CanaryReport, IngestResponse, MemoryOut, SessionOut

LISBON = "Alice: I moved to Lisbon last spring and I work as a marine biologist at the aquarium."
TEA = "Alice: every morning I drink green tea before I go diving."


def test_sync_client_round_trip(live_api: Any) -> None:
    admin_key, key = live_api.key("acme", admin=True), live_api.key("acme")
    with MemoryClient(live_api.url, key) as memory:
        ingested = memory.ingest("alice", [LISBON, ChunkBody(content=TEA, idempotency_key="m-2")])
        assert isinstance(ingested, IngestResponse) and ingested.complete
        assert [chunk.status for chunk in ingested.chunks] == ["done", "done"]

        found = memory.search("alice", "Lisbon", k=3)
        assert any("Lisbon" in item.content for item in found.semantic + found.episodic)
        answer = memory.answer("alice", "Where does Alice live?")
        assert isinstance(answer, AnswerOut)
        evidence = [e.content for e in answer.evidence.semantic + answer.evidence.episodic]
        assert any("Lisbon" in text for text in evidence), answer

        inserted = memory.insert_item("alice", "semantic", "Alice's sister is called Carol.")
        assert inserted.status == "ok" and inserted.memory_id
        updated = memory.update_item(
            "alice", "semantic", inserted.memory_id, "Alice's sister is Carol, a nurse."
        )
        assert updated.content == "Alice's sister is Carol, a nurse."
        assert memory.replace_core("alice", "Alice, marine biologist in Lisbon.").status == "ok"
        state = memory.get_memory("alice")
        assert isinstance(state, MemoryOut) and state.core == "Alice, marine biologist in Lisbon."
        assert any(item.id == inserted.memory_id for item in state.semantic)
        assert memory.delete_item("alice", "semantic", inserted.memory_id).status == "ok"
        assert memory.clear_core("alice").status == "ok"

        chunks = memory.list_chunks("alice")
        assert [chunk.seq for chunk in chunks.chunks] == [1, 2]
        assert chunks.chunks[1].idempotency_key == "m-2"
        actors = {op.actor for op in memory.list_operations("alice", limit=1000).operations}
        assert actors == {"policy", "user"}

        exported = memory.export_session("alice", include_chunks=True)
        imported = memory.import_session("alice-copy", exported)
        assert imported.imported["chunks"] == 2
        assert memory.get_memory("alice-copy").semantic == memory.get_memory("alice").semantic

        listed = {session.id: session for session in memory.list_sessions().sessions}
        assert set(listed) == {"alice", "alice-copy"}
        single = memory.get_session("alice")
        assert isinstance(single, SessionOut) and single.memory_tokens > 0
        assert listed["alice"].memory_tokens == single.memory_tokens

        # typed errors carry the API's code and message
        with pytest.raises(BadRequestError) as bad:
            memory.ingest("alice", ["   "])
        assert bad.value.status == 400 and bad.value.message
        with pytest.raises(UnprocessableError):
            memory.insert_item("alice", "procedural", "x")  # type: ignore[arg-type]
        with pytest.raises(ConflictError):
            memory.retry_chunk("alice", 1)  # done, not failed
        with pytest.raises(PermissionDeniedError):
            memory.set_policy("extractive")
        policy = memory.get_policy()
        memory.delete_session("alice-copy")
        with pytest.raises(NotFoundError) as missing:
            memory.get_session("alice-copy")
        assert missing.value.code == "not_found"

    with MemoryClient(live_api.url, admin_key) as admin:
        assert admin.set_policy(policy.name).active
        with pytest.raises(NotFoundError):
            admin.set_policy("no-such-policy")
    with MemoryClient(live_api.url, live_api.key("other")) as other:
        with pytest.raises(NotFoundError):  # another tenant's session does not exist for it
            other.get_memory("alice")
        assert other.list_sessions().sessions == []
    with MemoryClient(live_api.url, "not-a-key") as stranger, pytest.raises(AuthenticationError):
        stranger.list_sessions()
    with MemoryClient(f"http://127.0.0.1:{live_api.port + 0}", key) as memory:
        assert memory.health().status == "ok" and memory.ready().database


async def test_async_client_no_wait_and_idempotency(live_api: Any) -> None:
    key = live_api.key("acme")
    async with AsyncMemoryClient(live_api.url, key) as memory:
        chunks = [
            ChunkBody(content=LISBON, idempotency_key="a-1"),
            ChunkBody(content=TEA, idempotency_key="a-2"),
        ]
        first = await memory.ingest("bob", chunks, wait=False)
        assert [chunk.seq for chunk in first.chunks] == [1, 2]
        assert not any(chunk.duplicate for chunk in first.chunks)
        settled = await memory.settle("bob", timeout=60)
        assert settled.chunks.get("done") == 2
        again = await memory.ingest("bob", chunks, wait=True)
        assert again.complete and [c.duplicate for c in again.chunks] == [True, True]
        assert [c.seq for c in again.chunks] == [1, 2]
        assert (await memory.get_session("bob")).next_seq == 3  # nothing was appended twice
        answer = await memory.answer("bob", "What does Alice drink?")
        assert any("tea" in e.content for e in answer.evidence.semantic + answer.evidence.episodic)


def test_connection_failure_is_a_typed_error() -> None:
    from live_server import free_port

    with (
        MemoryClient(f"http://127.0.0.1:{free_port()}", timeout=2) as memory,
        pytest.raises(MemalphaError) as err,
    ):
        memory.health()
    assert err.value.status == 0 and err.value.code == "transport_error"


class _Throttled:
    """A real HTTP server that answers the first `busy` requests of a path 429 or 503 with `Retry-After`."""

    def __init__(self, busy: int, status: int, retry_after: str) -> None:
        self.busy, self.status, self.retry_after = busy, status, retry_after
        self.seen: list[float] = []

    async def handle(self, request: Request) -> JSONResponse:
        self.seen.append(time.monotonic())
        if len(self.seen) <= self.busy:
            body = {"error": {"code": "rate_limited", "message": "slow down"}}
            return JSONResponse(body, self.status, headers={"Retry-After": self.retry_after})
        return JSONResponse({"status": "ok"})


@pytest.mark.parametrize(("status", "retry_after"), [(429, "1"), (503, "Thu, 01 Jan 1970 00:00:00 GMT")])
def test_retries_honour_retry_after(status: int, retry_after: str) -> None:
    throttled = _Throttled(busy=2, status=status, retry_after=retry_after)
    with live(LiveServer(Starlette(routes=[Route("/healthz", throttled.handle)]))) as server:
        with MemoryClient(server.url, retry=RetryPolicy(max_retries=3, backoff_s=5.0)) as memory:
            assert memory.health().status == "ok"
        gaps = [b - a for a, b in zip(throttled.seen, throttled.seen[1:], strict=False)]
        assert len(throttled.seen) == 3
        if status == 429:  # "1" second, not the 5 s backoff
            assert all(0.9 <= gap < 3 for gap in gaps), gaps
        else:  # a date in the past: retry at once, again not the backoff
            assert all(gap < 3 for gap in gaps), gaps

        throttled.seen.clear()
        expected = RateLimitedError if status == 429 else UnavailableError
        retry = RetryPolicy(max_retries=1, backoff_s=0.01)
        with MemoryClient(server.url, retry=retry) as memory, pytest.raises(expected) as gave_up:
            memory.health()
        assert gave_up.value.status == status and gave_up.value.code == "rate_limited"
        assert len(throttled.seen) == 2


async def test_async_retry_uses_backoff_without_retry_after() -> None:
    throttled = _Throttled(busy=1, status=503, retry_after="")
    with live(LiveServer(Starlette(routes=[Route("/healthz", throttled.handle)]))) as server:
        async with AsyncMemoryClient(server.url, retry=RetryPolicy(backoff_s=0.3)) as memory:
            assert (await memory.health()).status == "ok"
    assert 0.3 <= throttled.seen[1] - throttled.seen[0] < 3


def test_sync_and_async_clients_offer_the_same_calls() -> None:
    def surface(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and name not in ("close", "aclose")
        }

    sync, asynchronous = surface(MemoryClient), surface(AsyncMemoryClient)
    assert sync.keys() == asynchronous.keys()
    for name, signature in sync.items():
        other = asynchronous[name]
        assert list(signature.parameters) == list(other.parameters), name
        assert signature.return_annotation == other.return_annotation, name
        assert inspect.iscoroutinefunction(getattr(AsyncMemoryClient, name)), name


def test_openapi_is_clean_for_generated_clients(live_api: Any) -> None:
    schema = httpx.get(f"{live_api.url}/openapi.json").json()
    assert "/metrics" not in schema["paths"]
    assert "/sessions/{session_id}/ingest" in schema["paths"]
    assert "/sessions/{session_id}/answer" in schema["paths"]
    ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert "sessions-ingest" in ids and "memory-answer" in ids and "operations-set_policy" in ids
    for path in schema["paths"].values():
        for op in path.values():
            assert op["operationId"].split("-", 1)[0] in op["tags"]
    insert = schema["paths"]["/sessions/{session_id}/memory/{memory_type}"]["post"]
    (kind,) = [p for p in insert["parameters"] if p["name"] == "memory_type"]
    assert kind["schema"]["enum"] == ["semantic", "episodic"]
    assert schema["components"]["schemas"]["IngestRequest"]["examples"]

    docs = httpx.get(f"{live_api.url}/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs-assets/{asset}" in docs.text
        assert httpx.get(f"{live_api.url}/docs-assets/{asset}").status_code == 200


def test_clients_use_the_apis_models() -> None:
    # the client's return annotations are the API's own classes, not copies
    from app.contracts import schemas

    hints = inspect.get_annotations(MemoryClient.answer, eval_str=True)
    assert hints["return"] is schemas.AnswerOut
    hints = inspect.get_annotations(AsyncMemoryClient.ingest, eval_str=True)
    assert hints["return"] is schemas.IngestResponse
    assert asyncio.iscoroutinefunction(AsyncMemoryClient.ingest)


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
async def test_policy_switch_history_and_rollback_through_the_client(live_api: Any) -> None:
    from trainer.publish import PublishError, rollback

    admin_key, reader_key = live_api.key("ops", admin=True), live_api.key("ops")
    with MemoryClient(live_api.url, admin_key) as admin:
        seeded = admin.get_policy().name
        registration = PolicyRegistration(name="candidate", base_model="extractive")
        admin.register_policy(registration)
        admin.register_policy(registration)  # again (a re-run publish): the same row, no conflict
        with pytest.raises(ConflictError):
            admin.register_policy(PolicyRegistration(name="candidate", base_model="other-base"))
        with pytest.raises(ConflictError):
            admin.rollback_policy()  # no switch recorded yet
        assert admin.set_policy("candidate").active
        assert admin.set_policy("candidate").active  # switching to the active one records nothing
        history = admin.policy_activations().activations
        assert [(a.action, a.from_name, a.to_name, a.actor) for a in history] == [
            ("switch", seeded, "candidate", "ops")
        ]
        with pytest.raises(NotFoundError):
            admin.set_policy("never-registered")
    with MemoryClient(live_api.url, reader_key) as reader:
        for call in (lambda: reader.set_policy(seeded), reader.rollback_policy, reader.policy_activations):
            with pytest.raises(PermissionDeniedError):
                call()
    back = await rollback(service_url=live_api.url, admin_key=admin_key)
    assert (back.previous, back.active) == ("candidate", seeded)
    with pytest.raises(PublishError, match="409"):  # nothing switched *to* the seeded policy before
        await rollback(service_url=live_api.url, admin_key=admin_key)
    with MemoryClient(live_api.url, admin_key) as admin:
        history = admin.policy_activations().activations
    assert [(a.action, a.from_name, a.to_name) for a in history] == [
        ("rollback", "candidate", seeded),
        ("switch", seeded, "candidate"),
    ]


@pytest.mark.parametrize("store_url", ["sqlite", "postgres"], indirect=True)
def test_the_canary_result_is_stored_with_the_switch(live_api: Any) -> None:
    admin_key = live_api.key("ops", admin=True)
    canary = CanaryReport(
        replica="http://vllm-0:8000/v1",
        chunks=8,
        parse_error_rate=0.25,
        r2=0.625,
        expected={"parse_error_rate": 0.0, "r2": 0.9},
        margin=0.2,
        failures=["parse errors 0.25 > manifest 0.00 + 0.20", "r2 0.62 < manifest 0.90 - 0.20"],
        passed=False,
        forced=True,
    )
    with MemoryClient(live_api.url, admin_key) as admin:
        seeded = admin.get_policy().name
        admin.register_policy(PolicyRegistration(name="canaried", base_model="extractive"))
        # a malformed result is refused, and nothing is switched
        for bad in (
            {**canary.model_dump(), "r2": "high"},
            {**canary.model_dump(), "chunks": 0},
            {"passed": True},
        ):
            response = httpx.put(
                f"{live_api.url}/policy",
                json={"name": "canaried", "canary": bad},
                headers={"Authorization": f"Bearer {admin_key}"},
            )
            assert response.status_code == 422, response.text
        assert admin.get_policy().name == seeded
        admin.set_policy("canaried", canary)
        admin.set_policy(seeded)  # a switch without a canary (as PUT /policy by hand, or a rollback)
        history = admin.policy_activations().activations
    assert [(a.to_name, a.canary) for a in history] == [(seeded, None), ("canaried", canary)]
