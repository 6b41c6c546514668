"""A tiny random Qwen2-shaped model with a LoRA adapter whose B matrices are non-zero, for trainer tests
that need the update's model to differ from the bare base (a fresh adapter is zero), and its sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from app.tokens import make_token_counter
from trainer.config import LoraConfig, ModelConfig
from trainer.models import LoadedPolicy, load_policy
from trainer.sampling.transformers_policy import TransformersPolicy
from trainer.tiny_model import create_tiny_model


def tiny_lora_policy(tmp_path_factory: pytest.TempPathFactory) -> LoadedPolicy:
    base = Path(tmp_path_factory.mktemp("tiny")) / "base"
    create_tiny_model(base, ["Paris is the capital of France. Berlin is the capital of Germany."], seed=3)
    loaded = load_policy(
        ModelConfig(source="tiny", name="tiny-qwen2", path=str(base), device="cpu"),
        LoraConfig(r=4, alpha=8),
        tiny_dir=base,
    )
    torch.manual_seed(0)
    for name, parameter in loaded.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    return loaded


def tiny_sampler(loaded: LoadedPolicy, **settings: Any) -> TransformersPolicy:
    """The `json` sampler of a tiny model (word-estimate counter, prompt budget 4096); `settings` are the
    sampler's own (max_new_tokens, temperature, frequency_penalty, repeat_stop_chars, …)."""
    return TransformersPolicy(
        loaded.model,
        loaded.tokenizer,
        model_name="tiny",
        tool_format="json",
        counter=make_token_counter(None),
        prompt_budget_tokens=4096,
        **settings,
    )
