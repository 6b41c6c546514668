"""The HTTP API table of ARCHITECTURE §6, endpoint by endpoint (paths, shapes, status codes), over ASGI,
on SQLite and Postgres, with the embedded defaults (extractive policy and answerer)."""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest
from conftest import Api, free_port, running_api, service_settings

from app.policy.prompt import prompt_sha256

pytestmark = pytest.mark.timeout(180)

ALICE = "Alice moved to Lisbon in March 2021. She works as a marine biologist at the city aquarium."
MISO = "On 4 May 2023 I adopted a grey cat named Miso from the shelter."
OPERATION_KEYS = {"tool", "memory_type", "memory_id", "status", "content", "error"}
ITEM_KEYS = {"id", "content", "created_at", "updated_at", "source_seq"}


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return dict(body["error"])


async def _memory(api: Api, session: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await api.client.get(f"/sessions/{session}/memory", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_ingest_then_memory_answer_and_search(api: Api) -> None:
    h = await api.tenant()
    response = await api.client.post(
        "/sessions/alice/ingest",
        headers=h,
        json={
            "chunks": [
                ALICE,
                {
                    "content": MISO,
                    "timestamp": "2023-05-04T10:00:00Z",
                    "idempotency_key": "miso",
                    "metadata": {"src": "t"},
                },
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["session_id"] == "alice" and body["complete"] is True
    seqs = [chunk["seq"] for chunk in body["chunks"]]
    assert len(seqs) == 2 and seqs[0] < seqs[1]
    for chunk in body["chunks"]:
        assert chunk["status"] == "done" and chunk["error"] is None and chunk["duplicate"] is False
        assert chunk["operations"], "the extractive policy writes every fact-bearing chunk"
        assert all(set(op) == OPERATION_KEYS for op in chunk["operations"])

    memory = await _memory(api, "alice", h)
    assert {"core", "semantic", "episodic", "version", "tokens"} <= set(memory)
    items = memory["semantic"] + memory["episodic"]
    assert items and all(ITEM_KEYS <= set(item) for item in items)
    assert {item["source_seq"] for item in items} <= set(seqs)
    written = sum(op["status"] == "ok" for chunk in body["chunks"] for op in chunk["operations"])
    assert memory["version"] >= written > 0

    response = await api.client.get(
        "/sessions/alice/answer", params={"q": "Which city did Alice move to?"}, headers=h
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert {"question", "answer", "evidence", "memory_version", "model"} <= set(answer)
    assert (
        answer["question"] == "Which city did Alice move to?"
        and answer["memory_version"] == memory["version"]
    )
    assert "Lisbon" in answer["answer"]
    evidence = answer["evidence"]
    assert set(evidence) >= {"core", "semantic", "episodic"}
    scored = evidence["semantic"] + evidence["episodic"]
    assert scored and all({"id", "content", "score"} <= set(item) for item in scored)
    assert any("Lisbon" in item["content"] for item in scored)

    response = await api.client.get("/sessions/alice/search", params={"q": "cat Miso", "k": 3}, headers=h)
    assert response.status_code == 200, response.text
    found = response.json()
    assert "Miso" in str(found)

    _error(await api.client.get("/sessions/nobody/answer", params={"q": "x"}, headers=h), 404)
    _error(await api.client.get("/sessions/alice/answer", headers=h), 422)  # q is required


async def test_wait_false_returns_202_then_chunks_finish(api: Api) -> None:
    h = await api.tenant()
    response = await api.client.post(
        "/sessions/later/ingest", headers=h, json={"chunks": [ALICE, MISO], "wait": False}
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["complete"] is False
    assert all(chunk["status"] == "pending" and chunk["operations"] == [] for chunk in body["chunks"])
    chunks = await api.settled("later", h)
    assert [c["status"] for c in chunks] == ["done", "done"]
    assert [c["seq"] for c in chunks] == [c["seq"] for c in body["chunks"]]


async def test_session_status_list_and_delete(api: Api) -> None:
    h = await api.tenant()
    for name in ("s-one", "s-two"):
        assert (
            await api.client.post(f"/sessions/{name}/ingest", headers=h, json={"chunks": [ALICE]})
        ).status_code == 200
    response = await api.client.get("/sessions", headers=h)
    assert response.status_code == 200, response.text
    listing = response.json()
    assert sorted(s["id"] for s in listing["sessions"]) == ["s-one", "s-two"]
    assert listing["limit"] == 100 and listing["offset"] == 0
    page = (await api.client.get("/sessions", params={"limit": 1, "offset": 1}, headers=h)).json()
    assert len(page["sessions"]) == 1

    response = await api.client.get("/sessions/s-one", headers=h)
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["id"] == "s-one" and status["version"] >= 1

    response = await api.client.delete("/sessions/s-one", headers=h)
    assert response.status_code == 204 and response.content == b""
    _error(await api.client.get("/sessions/s-one", headers=h), 404)
    _error(await api.client.get("/sessions/s-one/memory", headers=h), 404)
    _error(await api.client.get("/sessions/s-one/chunks", headers=h), 404)
    _error(await api.client.delete("/sessions/s-one", headers=h), 404)
    remaining = (await api.client.get("/sessions", headers=h)).json()["sessions"]
    assert [s["id"] for s in remaining] == ["s-two"]


async def test_manual_edits_are_applied_and_audited(api: Api) -> None:
    h = await api.tenant()
    assert (
        await api.client.post("/sessions/ed/ingest", headers=h, json={"chunks": [ALICE]})
    ).status_code == 200
    before = await _memory(api, "ed", h)

    response = await api.client.put(
        "/sessions/ed/memory/core", headers=h, json={"content": "Alice, marine biologist."}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ok" and set(response.json()) == OPERATION_KEYS

    response = await api.client.post(
        "/sessions/ed/memory/semantic", headers=h, json={"content": "Alice likes tea."}
    )
    assert response.status_code == 201, response.text
    inserted = response.json()
    assert inserted["tool"] == "new_memory_insert" and inserted["status"] == "ok" and inserted["memory_id"]
    item_id = inserted["memory_id"]

    response = await api.client.patch(
        f"/sessions/ed/memory/semantic/{item_id}", headers=h, json={"content": "Alice likes green tea."}
    )
    assert response.status_code == 200, response.text
    memory = await _memory(api, "ed", h)
    assert memory["core"] == "Alice, marine biologist."
    edited = [item for item in memory["semantic"] if item["id"] == item_id]
    assert edited and edited[0]["content"] == "Alice likes green tea." and edited[0]["source_seq"] is None

    response = await api.client.delete(f"/sessions/ed/memory/semantic/{item_id}", headers=h)
    assert response.status_code == 200, response.text
    response = await api.client.delete("/sessions/ed/memory/core", headers=h)
    assert response.status_code == 200, response.text
    memory = await _memory(api, "ed", h)
    assert memory["core"] == "" and all(item["id"] != item_id for item in memory["semantic"])
    assert memory["version"] > before["version"]

    _error(
        await api.client.patch(f"/sessions/ed/memory/semantic/{item_id}", headers=h, json={"content": "x"}),
        404,
    )
    _error(await api.client.delete("/sessions/ed/memory/episodic/zzzz", headers=h), 404)

    response = await api.client.get("/sessions/ed/operations", headers=h)
    assert response.status_code == 200, response.text
    operations = response.json()["operations"]
    ids = [op["id"] for op in operations]
    assert ids == sorted(ids)
    manual = [op for op in operations if op["actor"] == "user"]
    assert len(manual) == 5 and all(op["status"] == "ok" for op in manual)
    assert any(
        op["after"] == "Alice likes green tea." and op["before"] == "Alice likes tea." for op in manual
    )
    assert any(op["actor"] != "user" for op in operations), "the policy's operations are logged too"
    later = (await api.client.get("/sessions/ed/operations", params={"after_id": ids[-3]}, headers=h)).json()
    assert [op["id"] for op in later["operations"]] == ids[-2:]


async def test_chunk_log_and_retry_of_a_chunk_that_did_not_fail(api: Api) -> None:
    h = await api.tenant()
    body = (await api.client.post("/sessions/log/ingest", headers=h, json={"chunks": [ALICE, MISO]})).json()
    seqs = [chunk["seq"] for chunk in body["chunks"]]
    response = await api.client.get("/sessions/log/chunks", headers=h)
    assert response.status_code == 200, response.text
    chunks = response.json()["chunks"]
    assert [c["seq"] for c in chunks] == seqs and all(c["status"] == "done" for c in chunks)
    after = (await api.client.get("/sessions/log/chunks", params={"after_seq": seqs[0]}, headers=h)).json()
    assert [c["seq"] for c in after["chunks"]] == seqs[1:]
    failed = (await api.client.get("/sessions/log/chunks", params={"status": "failed"}, headers=h)).json()
    assert failed["chunks"] == []
    _error(await api.client.get("/sessions/log/chunks", params={"status": "bogus"}, headers=h), 422)

    _error(await api.client.post(f"/sessions/log/chunks/{seqs[0]}/retry", headers=h), 409)
    _error(await api.client.post("/sessions/log/chunks/999/retry", headers=h), 404)


async def test_export_import_roundtrip(api: Api) -> None:
    h = await api.tenant()
    assert (
        await api.client.post("/sessions/src/ingest", headers=h, json={"chunks": [ALICE, MISO]})
    ).status_code == 200
    response = await api.client.get("/sessions/src/export", params={"include_chunks": True}, headers=h)
    assert response.status_code == 200, response.text
    exported = response.json()
    assert ALICE in str(exported), "the chunk log is part of the export when asked for"
    assert ALICE not in str((await api.client.get("/sessions/src/export", headers=h)).json())

    response = await api.client.post("/sessions/copy/import", headers=h, json=exported)
    assert response.status_code == 200, response.text
    source, copy = await _memory(api, "src", h), await _memory(api, "copy", h)
    for kind in ("semantic", "episodic"):
        assert [(i["id"], i["content"]) for i in copy[kind]] == [
            (i["id"], i["content"]) for i in source[kind]
        ]
    assert copy["core"] == source["core"]
    _error(await api.client.post("/sessions/src/import", headers=h, json=exported), 409)


async def test_health_readiness_and_metrics(api: Api) -> None:
    h = await api.tenant()
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    response = await api.client.get("/readyz")
    assert response.status_code == 200 and response.json() == {
        "status": "ready",
        "database": True,
        "policy": None,  # readiness is the database's; the policy server is a detail on request
    }
    response = await api.client.get("/readyz", params={"full": 1})
    assert response.status_code == 200 and response.json()["policy"] is True
    assert (
        await api.client.post("/sessions/metered-4f7a/ingest", headers=h, json={"chunks": [ALICE]})
    ).status_code == 200
    response = await api.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    pattern = r'memalpha_http_request_duration_seconds_count\{method="POST",route="/sessions/\{session_id\}/ingest",status="200"\} (\d+)'
    match = re.search(pattern, text)
    assert match and float(match.group(1)) >= 1
    assert "metered-4f7a" not in text, "raw paths (session ids) must not become labels"
    assert "memalpha_operations_total" in text and "memalpha_policy_latency_seconds" in text


async def test_policy_read_and_admin_switch(api: Api) -> None:
    user, admin = await api.tenant(), await api.tenant(admin=True)
    response = await api.client.get("/policy", headers=user)
    assert response.status_code == 200, response.text
    active = response.json()
    assert active["name"]
    # What an adapter must have been trained under (publish compares its manifest with this).
    settings = api.settings
    assert active["serving"] == {
        "tool_format": settings.policy_tool_format,
        "max_new_tokens": settings.policy_max_tokens,
        "prompt_budget_tokens": settings.policy_prompt_budget_tokens,
        "token_counter": "word-estimate",
        "max_calls": settings.policy_max_calls if settings.policy_tool_format == "json" else None,
        "frequency_penalty": settings.policy_frequency_penalty,
        "repeat_stop_chars": settings.policy_repeat_stop_chars,
        "prompt_sha256": prompt_sha256(settings.policy_tool_format, settings.core_token_limit),
    }
    _error(await api.client.put("/policy", headers=user, json={"name": active["name"]}), 403)
    _error(await api.client.put("/policy", headers=admin, json={"name": "no-such-policy"}), 404)
    _error(await api.client.put("/policy", headers=admin, json={}), 422)
    response = await api.client.put("/policy", headers=admin, json={"name": active["name"]})
    assert response.status_code == 200 and response.json()["name"] == active["name"]


async def test_auth_is_required(api: Api) -> None:
    assert _error(await api.client.get("/sessions"), 401)["code"] == "unauthorized"
    response = await api.client.get("/sessions", headers={"Authorization": "Bearer ma_not-a-key"})
    _error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    _error(await api.client.post("/sessions/x/ingest", json={"chunks": ["hi"]}), 401)
    assert (await api.client.get("/healthz")).status_code == 200  # probes need no key


async def test_openapi_and_docs_are_served(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    expected = {
        "/sessions/{session_id}/ingest": {"post"},
        "/sessions/{session_id}/answer": {"get"},
        "/sessions/{session_id}/search": {"get"},
        "/sessions/{session_id}/memory": {"get"},
        "/sessions/{session_id}/memory/core": {"put", "delete"},
        "/sessions/{session_id}/memory/{memory_type}": {"post"},
        "/sessions/{session_id}/memory/{memory_type}/{memory_id}": {"patch", "delete"},
        "/sessions/{session_id}": {"get", "delete"},
        "/sessions": {"get"},
        "/sessions/{session_id}/chunks": {"get"},
        "/sessions/{session_id}/chunks/{seq}/retry": {"post"},
        "/sessions/{session_id}/operations": {"get"},
        "/sessions/{session_id}/export": {"get"},
        "/sessions/{session_id}/import": {"post"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/policy": {"get", "put"},
        "/policy/rollback": {"post"},
        "/policy/activations": {"get"},
    }
    assert "/metrics" not in paths  # served (test_health_readiness_and_metrics), not an API operation
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    ingest = paths["/sessions/{session_id}/ingest"]["post"]["responses"]
    assert {"200", "202", "413"} <= set(ingest)
    docs = await api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    _error(await api.client.get("/no/such/route"), 404)
    _error(await api.client.put("/sessions"), 405)


async def test_policy_switch_checks_every_address_of_a_dns_replica_name(store_url: str) -> None:
    """`PUT /policy` resolves `dns+` replica names when it syncs the adapter: every address is asked
    (none listens here), the 409 names them; a name that no longer resolves is a 409 too, not a 500."""
    port = free_port()
    settings = service_settings(
        store_url,
        policy_backend="openai",
        policy_url=f"http://127.0.0.1:{port}/v1",
        policy_urls=[f"dns+http://localhost:{port}/v1"],
    )
    async with running_api(settings) as api:
        admin = await api.tenant(admin=True)
        name = f"lora-{secrets.token_hex(3)}"
        response = await api.client.post(
            "/policies",
            headers=admin,
            json={"name": name, "base_model": settings.policy_model, "adapter_path": "/adapters/x"},
        )
        assert response.status_code in (200, 201), response.text
        body = _error(await api.client.put("/policy", headers=admin, json={"name": name}), 409)
        assert body["details"]["replicas"] == [f"http://127.0.0.1:{port}/v1"], body
        api.settings.policy_urls = ["dns+http://no-such-replica.invalid:8000/v1"]
        body = _error(await api.client.put("/policy", headers=admin, json={"name": name}), 409)
        assert "does not resolve" in body["message"], body
