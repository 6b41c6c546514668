"""Tenant isolation over HTTP: another tenant's session is simply not found (404, never 403), and the
same session id under two tenants names two separate sessions."""

from __future__ import annotations

import pytest
from conftest import Api

pytestmark = pytest.mark.timeout(180)

SECRET = "Carol's locker code is 4471. She keeps her passport in it."
OTHER = "Dan plays the cello every Sunday morning."


async def test_tenants_cannot_see_each_other(api: Api) -> None:
    a, b = await api.tenant(), await api.tenant()
    body = (await api.client.post("/sessions/carol/ingest", headers=a, json={"chunks": [SECRET]})).json()
    seq = body["chunks"][0]["seq"]
    memory_a = (await api.client.get("/sessions/carol/memory", headers=a)).json()
    item = (memory_a["semantic"] + memory_a["episodic"])[0]
    kind = "semantic" if item in memory_a["semantic"] else "episodic"

    client = api.client
    attempts = {
        "status": await client.get("/sessions/carol", headers=b),
        "memory": await client.get("/sessions/carol/memory", headers=b),
        "answer": await client.get("/sessions/carol/answer", params={"q": "locker code"}, headers=b),
        "search": await client.get("/sessions/carol/search", params={"q": "locker code"}, headers=b),
        "chunks": await client.get("/sessions/carol/chunks", headers=b),
        "operations": await client.get("/sessions/carol/operations", headers=b),
        "export": await client.get("/sessions/carol/export", params={"include_chunks": True}, headers=b),
        "retry": await client.post(f"/sessions/carol/chunks/{seq}/retry", headers=b),
        "update": await client.patch(
            f"/sessions/carol/memory/{kind}/{item['id']}", headers=b, json={"content": "x"}
        ),
        "delete item": await client.delete(f"/sessions/carol/memory/{kind}/{item['id']}", headers=b),
        "delete": await client.delete("/sessions/carol", headers=b),
    }
    for name, response in attempts.items():
        assert response.status_code == 404, (name, response.status_code, response.text)
        assert response.json()["error"]["code"] == "not_found"
        assert "4471" not in response.text

    assert (await client.get("/sessions", headers=b)).json()["sessions"] == []

    # B's own "carol" is a different session: it sees only B's chunk, and A's is untouched.
    response = await client.post("/sessions/carol/ingest", headers=b, json={"chunks": [OTHER]})
    assert response.status_code == 200, response.text
    memory_b = (await client.get("/sessions/carol/memory", headers=b)).json()
    assert "4471" not in str(memory_b) and "cello" in str(memory_b)
    answer_b = (await client.get("/sessions/carol/answer", params={"q": "locker code"}, headers=b)).json()
    assert "4471" not in str(answer_b)
    assert (await client.get("/sessions/carol/memory", headers=a)).json() == memory_a
    chunks_a = (await client.get("/sessions/carol/chunks", headers=a)).json()["chunks"]
    assert [c["seq"] for c in chunks_a] == [seq]
    assert [s["id"] for s in (await client.get("/sessions", headers=a)).json()["sessions"]] == ["carol"]
    assert [s["id"] for s in (await client.get("/sessions", headers=b)).json()["sessions"]] == ["carol"]

    # Deleting B's session leaves A's.
    assert (await client.delete("/sessions/carol", headers=b)).status_code == 204
    assert (await client.get("/sessions/carol/memory", headers=a)).json() == memory_a
