"""A failing policy endpoint (timeouts, HTTP 500, a body that is not JSON) over real HTTP: the chunk is
retried, then `failed` with its error visible in `/chunks` (so does a reply with no parseable tool
call); later chunks wait behind it; the service stays healthy; `POST …/chunks/{seq}/retry` finishes the work once the endpoint recovers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Api, free_port, running_api, service_settings
from prometheus_client import REGISTRY
from scripted_llm import Delay, Echo, Garbage, ScriptedLLM, Status, Text

pytestmark = pytest.mark.timeout(180)

FIRST = "Gina repaired the lighthouse lamp on the night of the storm."
SECOND = "Gina's brother Hal keeps bees on the cliff above the harbour."
ATTEMPTS, TRIES = 2, 2  # chunk attempts by the worker; HTTP tries per attempt (policy_max_retries=1)

FAILURES = {
    # behaviour of the endpoint, what the chunk's error must say, HTTP requests per attempt
    "timeout": (Delay(3.0), "timed out", TRIES),
    "http-500": (Status(500), "HTTP 500", TRIES),
    "garbage": (Garbage(), "", 1),  # not a transient failure: no HTTP-level retry
}


def _settings(url: str, llm: ScriptedLLM) -> Any:
    return service_settings(
        url,
        policy_backend="openai",
        policy_url=llm.url,
        policy_model=llm.model,
        policy_tool_format="alpha",
        policy_timeout_s=0.5,
        policy_max_retries=TRIES - 1,
        policy_retry_backoff_s=0.01,
        chunk_max_attempts=ATTEMPTS,
    )


async def _chunks(api: Api, headers: dict[str, str]) -> dict[int, dict[str, Any]]:
    response = await api.client.get("/sessions/gina/chunks", headers=headers)
    assert response.status_code == 200, response.text
    return {chunk["seq"]: chunk for chunk in response.json()["chunks"]}


async def _until_failed(
    api: Api, headers: dict[str, str], seq: int, timeout: float = 60
) -> dict[int, dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while (chunks := await _chunks(api, headers))[seq]["status"] != "failed":
        assert asyncio.get_running_loop().time() < deadline, chunks
        await asyncio.sleep(0.05)
    return chunks


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_failing_policy_then_retry(store_url: str, scripted_llm: ScriptedLLM, failure: str) -> None:
    behaviour, says, tries = FAILURES[failure]
    scripted_llm.default = behaviour
    async with running_api(_settings(store_url, scripted_llm)) as api:
        h = await api.tenant()
        response = await api.client.post(
            "/sessions/gina/ingest", headers=h, json={"chunks": [FIRST, SECOND], "wait": False}
        )
        assert response.status_code == 202, response.text
        first, second = (chunk["seq"] for chunk in response.json()["chunks"])

        chunks = await _until_failed(api, h, first)
        failed = chunks[first]
        assert failed["attempts"] == ATTEMPTS and failed["error"] and says in failed["error"], failed
        assert chunks[second]["status"] == "pending", "a later chunk must not overtake the failed one"
        assert len(scripted_llm.requests) == ATTEMPTS * tries
        assert all(r.chunk == FIRST for r in scripted_llm.requests)
        status = (await api.client.get("/sessions/gina", headers=h)).json()
        assert status["blocked_by_seq"] == first and status["chunks"]["failed"] == 1

        # The service itself is fine: probes, reads and other sessions work.
        assert (await api.client.get("/healthz")).status_code == 200
        assert (await api.client.get("/readyz")).status_code == 200  # the endpoint still lists its models
        assert (await api.client.get("/sessions/gina/memory", headers=h)).json()["version"] == 0

        scripted_llm.default = Echo()  # the endpoint recovers
        response = await api.client.post(f"/sessions/gina/chunks/{first}/retry", headers=h)
        assert response.status_code == 202, response.text
        assert response.json()["seq"] == first and response.json()["status"] == "pending"
        chunks = {c["seq"]: c for c in await api.settled("gina", h)}
        assert chunks[first]["status"] == chunks[second]["status"] == "done"
        assert chunks[first]["error"] is None

        operations = (await api.client.get("/sessions/gina/operations", headers=h)).json()["operations"]
        assert [(op["chunk_seq"], op["status"]) for op in operations] == [(first, "ok"), (second, "ok")]
        memory = (await api.client.get("/sessions/gina/memory", headers=h)).json()
        assert [item["content"] for item in memory["semantic"]] == [FIRST, SECOND]
        response = await api.client.post(f"/sessions/gina/chunks/{first}/retry", headers=h)
        assert response.status_code == 409, response.text


async def test_a_reply_without_a_parseable_tool_call_is_a_failed_attempt(
    store_url: str, scripted_llm: ScriptedLLM
) -> None:
    """Prose with a broken call: the attempt fails (retried, the chunk is not `done` with its content
    never stored); the next reply parses and the chunk is done on its second attempt. Garbage every
    time ends `failed` with the parse error visible in `/chunks`."""
    garbled = Text("I think this chunk is about lighthouses {{{ memory_insert(oops")
    counted_before = REGISTRY.get_sample_value("memalpha_parse_failures_total") or 0.0
    scripted_llm.script(garbled)
    async with running_api(_settings(store_url, scripted_llm)) as api:
        h = await api.tenant()
        response = await api.client.post("/sessions/gina/ingest", headers=h, json={"chunks": [FIRST, SECOND]})
        assert response.status_code == 200, response.text
        retried, echoed = response.json()["chunks"]
        assert retried["status"] == "done" and [op["status"] for op in retried["operations"]] == ["ok"]
        assert echoed["status"] == "done" and [op["status"] for op in echoed["operations"]] == ["ok"]
        chunks = await _chunks(api, h)
        assert chunks[retried["seq"]]["attempts"] == 2 and chunks[echoed["seq"]]["attempts"] == 1

        scripted_llm.script(*[garbled] * ATTEMPTS)
        response = await api.client.post("/sessions/gina/ingest", headers=h, json={"chunks": [FIRST]})
        assert response.status_code == 200, response.text
        (failed,) = response.json()["chunks"]
        assert failed["status"] == "failed" and failed["operations"] == []
        chunk = (await _chunks(api, h))[failed["seq"]]
        assert chunk["attempts"] == ATTEMPTS and "no parseable tool call" in chunk["error"], chunk
        counted = REGISTRY.get_sample_value("memalpha_parse_failures_total") or 0.0
        assert counted - counted_before == 1 + ATTEMPTS  # every garbled reply, failed attempt or not


async def test_unreachable_policy_endpoint_is_not_ready_but_accepts_chunks(store_url: str) -> None:
    settings = service_settings(
        store_url,
        policy_backend="openai",
        policy_url=f"http://127.0.0.1:{free_port()}/v1",
        policy_model="nobody",
        policy_timeout_s=0.5,
        policy_max_retries=0,
        chunk_max_attempts=50,
        retry_backoff_s=1.0,
    )
    async with running_api(settings) as api:
        h = await api.tenant()
        assert (await api.client.get("/healthz")).status_code == 200
        # Ready without the policy server (ingestion is durable); its health is a detail and a metric.
        response = await api.client.get("/readyz")
        assert response.status_code == 200 and response.json()["policy"] is None, response.text
        response = await api.client.get("/readyz", params={"full": "1"})
        assert response.status_code == 200 and response.json()["policy"] is False, response.text
        assert "memalpha_policy_up 0.0" in (await api.client.get("/metrics")).text
        # Accepting is durable without the policy: the chunk waits in the log.
        response = await api.client.post(
            "/sessions/gina/ingest", headers=h, json={"chunks": [FIRST], "wait": False}
        )
        assert response.status_code == 202, response.text
        (chunk,) = (await _chunks(api, h)).values()
        assert chunk["status"] in ("pending", "processing") and chunk["content"] == FIRST


async def test_failing_answering_model_is_a_503(store_url: str, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.default = Status(500)
    settings = service_settings(
        store_url,
        answerer_backend="openai",
        answerer_url=scripted_llm.url,
        answerer_model=scripted_llm.model,
        answerer_max_retries=0,
    )
    async with running_api(settings) as api:
        h = await api.tenant()
        assert (
            await api.client.post("/sessions/gina/ingest", headers=h, json={"chunks": [FIRST]})
        ).status_code == 200
        response = await api.client.get(
            "/sessions/gina/answer", params={"q": "What did Gina repair?"}, headers=h
        )
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "unavailable"
        search = await api.client.get("/sessions/gina/search", params={"q": "lighthouse lamp"}, headers=h)
        assert search.status_code == 200 and search.json()["semantic"] + search.json()["episodic"]
