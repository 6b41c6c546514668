"""The one-GPU training layout as shipped: trainer/configs/gpu-1x.toml and docker-compose.yml's
`train-1gpu` profile agree with each other (no engine needed: the compose file is read as YAML, the
config through the trainer's own schema). What the layout does on a GPU is not tested here."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import yaml

from trainer.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _default(value: str) -> str:
    """`${NAME:-default}` → default."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match.group(1) if match else value


def test_gpu_1x_config_and_compose_profile_agree() -> None:
    config = load_config(ROOT / "trainer" / "configs" / "gpu-1x.toml")
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    vllm, trainer = services["vllm-train"], services["trainer-1gpu"]
    assert vllm["profiles"] == ["train-1gpu"] and trainer["profiles"] == ["train-1gpu"]
    assert trainer["depends_on"]["vllm-train"]["condition"] == "service_healthy"  # vLLM sizes itself first
    assert "./trainer/configs/gpu-1x.toml:/config/train.toml:ro" in trainer["volumes"]
    # one GPU: the same device for both
    assert vllm["deploy"] == trainer["deploy"] == services["trainer"]["deploy"]

    # rollouts and the r1 reader go to the training vLLM, never to the serving one
    assert urlparse(config.rollout.vllm_url or "").hostname == "vllm-train"
    assert urlparse(config.reward.answerer_url or "").hostname == "vllm-train"
    flags = {}
    for part in vllm["command"]:
        name, _, value = part.removeprefix("--").partition("=")
        flags[name] = _default(value)
    assert flags["served-model-name"] == config.model.name == config.reward.answerer_model
    assert flags["model"] == config.model.path
    assert "enable-lora" in flags and int(flags["max-lora-rank"]) >= config.lora.r
    assert 0.2 <= float(flags["gpu-memory-utilization"]) <= 0.5  # a share: the trainer needs the rest
    assert int(flags["max-model-len"]) >= config.rollout.prompt_budget_tokens + config.rollout.max_new_tokens

    # the update's memory knobs are on, in bf16 on the GPU
    grpo = config.grpo
    assert grpo.gradient_checkpointing and grpo.micro_batch_tokens and grpo.logprob_chunk_tokens
    assert grpo.micro_batch_tokens >= config.rollout.max_new_tokens  # the longest completion fits alone
    assert (config.model.dtype, config.model.device) == ("bfloat16", "cuda")
    assert config.grpo.old_logprobs == "recompute"  # vLLM's numbers are not the trainer's
    assert config.run.out_dir.startswith("/adapters/")  # vLLM loads the rollout adapters by this path
