"""The MCP endpoint (`/mcp`, streamable HTTP) and the stdio bridge (`memalpha mcp`), driven by the
official SDK's own client over real HTTP, with the REST API's keys and tenant scoping."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import httpx2  # the SDK's HTTP client
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from app.contracts.schemas import AnswerOut, IngestResponse, MemoryOut, SearchOut

LISBON = "Alice: I moved to Lisbon last spring and I work as a marine biologist at the aquarium."
ROOT = Path(__file__).resolve().parent.parent


def _client(url: str, key: str | None) -> Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx2.AsyncClient(headers=headers, timeout=120)
    return Client(streamable_http_client(f"{url}/mcp", http_client=http))


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def test_mcp_tools_over_http_are_scoped_to_the_key(live_api: Any) -> None:
    alice_key, other_key = live_api.key("acme"), live_api.key("umbrella")
    async with _client(live_api.url, alice_key) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {"remember", "recall", "answer", "show_memory"}
        assert "session_id" in tools["remember"].input_schema["required"]

        stored = await client.call_tool("remember", {"session_id": "alice", "text": LISBON})
        assert not stored.is_error, _text(stored)
        ingested = IngestResponse.model_validate(stored.structured_content)
        assert ingested.complete and ingested.chunks[0].status == "done"
        assert any(op.status == "ok" for op in ingested.chunks[0].operations)

        found = await client.call_tool("recall", {"session_id": "alice", "query": "Lisbon", "k": 3})
        hits = SearchOut.model_validate(found.structured_content)
        assert any("Lisbon" in item.content for item in hits.semantic + hits.episodic)

        answered = await client.call_tool(
            "answer", {"session_id": "alice", "question": "Where does Alice live?"}
        )
        answer = AnswerOut.model_validate(answered.structured_content)
        assert any("Lisbon" in e.content for e in answer.evidence.semantic + answer.evidence.episodic)

        shown = await client.call_tool("show_memory", {"session_id": "alice"})
        memory = MemoryOut.model_validate(shown.structured_content)
        assert memory.version >= 1 and memory.semantic + memory.episodic

        bad = await client.call_tool("remember", {"session_id": "alice", "text": "   "})
        assert bad.is_error and "bad_request" in _text(bad)

    async with _client(live_api.url, other_key) as other:
        for tool, arguments in (
            ("show_memory", {"session_id": "alice"}),
            ("recall", {"session_id": "alice", "query": "Lisbon"}),
            ("answer", {"session_id": "alice", "question": "Where does Alice live?"}),
        ):
            result = await other.call_tool(tool, arguments)
            assert result.is_error and "not_found" in _text(result), (tool, _text(result))
            assert "Lisbon" not in _text(result)
        # the other tenant's own "alice" is a different memory
        await other.call_tool("remember", {"session_id": "alice", "text": "Umbrella's Alice likes chess."})
        theirs = MemoryOut.model_validate(
            (await other.call_tool("show_memory", {"session_id": "alice"})).structured_content
        )
        assert "Lisbon" not in theirs.model_dump_json()
    # ...and left the first tenant's untouched
    assert live_api.get("/sessions/alice/memory", alice_key).json()["version"] == memory.version

    for key in (None, "not-a-key"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers |= {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        async with httpx.AsyncClient() as http:
            ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            response = await http.post(f"{live_api.url}/mcp", headers=headers, json=ping)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_stdio_bridge_forwards_to_the_service(live_api: Any) -> None:
    key = live_api.key("acme")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "app.cli", "mcp", "--url", live_api.url, "--key", key],
        env=env,
        cwd=ROOT,
    )
    async with Client(params) as client:
        stored = await client.call_tool("remember", {"session_id": "desk", "text": LISBON})
        assert not stored.is_error, _text(stored)
        shown = MemoryOut.model_validate(
            (await client.call_tool("show_memory", {"session_id": "desk"})).structured_content
        )
        missing = await client.call_tool("show_memory", {"session_id": "nobody"})
        assert missing.is_error and "not_found" in _text(missing)
    # what the bridge wrote is in the service, under the key's tenant
    rest = live_api.get("/sessions/desk/memory", key).json()
    assert rest["version"] == shown.version and rest["semantic"] == [
        i.model_dump(mode="json") for i in shown.semantic
    ]
