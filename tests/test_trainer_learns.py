"""The GRPO update learns from its advantages, and only from them: on a tiny random Qwen2 with LoRA and a
synthetic reward (1 when a completion's first token falls in a fixed target set), the sampled reward
rises when the update gets the group advantages of the rewards, and does not when it gets the same
advantages shuffled within each group (the control: an update that moved the reward without following
the advantages - a sign error, a loss that ignores A, a stale log-prob - fails one of the two)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from app.memory import WordTokenCounter
from trainer.config import GRPOConfig, LoraConfig, ModelConfig
from trainer.grpo import TrainSample, grpo_update, warmup_schedule
from trainer.models import load_policy
from trainer.rewards import group_advantages
from trainer.sampling.record import TokenSample
from trainer.sampling.transformers_policy import TransformersPolicy
from trainer.tiny_model import create_tiny_model

ITERATIONS = 10
GROUP = 16
PROMPTS = 2


def _reward(sample: TokenSample, target: set[int]) -> float:
    return float(bool(sample.completion_ids) and sample.completion_ids[0] in target)


def _train(base: Path, *, shuffled: bool) -> tuple[float, float]:
    """The expected reward (exact, from the model's first-token distribution) before and after training."""
    torch.manual_seed(0)
    loaded = load_policy(
        ModelConfig(source="tiny", name="tiny", path=str(base), device="cpu"),
        # lm_head too: a random tiny model's hidden states are normalised and its head is near zero, so
        # without it no adapter can make the output distribution peaked.
        LoraConfig(
            r=8, alpha=16, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj", "lm_head"]
        ),
        tiny_dir=base,
    )
    vocab = loaded.model.config.vocab_size
    rng = random.Random(1)
    target = set(rng.sample(range(vocab), vocab // 4))
    prompts = [[rng.randrange(vocab) for _ in range(12)] for _ in range(PROMPTS)]
    sampler = TransformersPolicy(
        loaded.model,
        loaded.tokenizer,
        model_name="tiny",
        tool_format="json",  # no stop markers: completions run to the budget or an end token
        counter=WordTokenCounter(),
        prompt_budget_tokens=512,
        max_new_tokens=3,
        temperature=1.0,
        max_batch=GROUP * PROMPTS,
    )
    trainable = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-2)
    scheduler = warmup_schedule(optimizer, 0)
    config = GRPOConfig(kl_coef=0.0)
    shuffle = random.Random(2)

    @torch.no_grad()
    def expected() -> float:
        logits = loaded.model(input_ids=torch.tensor(prompts)).logits[:, -1].float()
        return float(torch.softmax(logits, dim=-1)[:, sorted(target)].sum(dim=-1).mean())

    before = expected()
    for iteration in range(ITERATIONS):
        batch = sampler.sample_batch([prompt for prompt in prompts for _ in range(GROUP)])
        rewards = [_reward(sample, target) for sample in batch]
        samples = []
        for start in range(0, len(batch), GROUP):
            if len(set(rewards[start : start + GROUP])) == 1:
                continue  # zero variance: the trainer filters the group (an empty step would still move Adam)
            advantages = group_advantages(rewards[start : start + GROUP])
            if shuffled:
                shuffle.shuffle(advantages)
            samples += [
                TrainSample(s.prompt_ids, s.completion_ids, s.logprobs, advantage, s.temperature)
                for s, advantage in zip(batch[start : start + GROUP], advantages, strict=True)
                if s.completion_ids
            ]
        if samples:
            grpo_update(loaded.model, optimizer, scheduler, samples, config, random.Random(iteration))
    return before, expected()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(tmp_path_factory.mktemp("tiny")) / "base"
    create_tiny_model(path, ["the cat sat on the mat while the dog ran in the park"], seed=5)
    return path


def test_reward_rises_with_the_advantages_and_not_with_shuffled_ones(base: Path) -> None:
    start, end = _train(base, shuffled=False)
    control_start, control_end = _train(base, shuffled=True)
    print(
        f"\nreward: real advantages {start:.3f} → {end:.3f}; shuffled {control_start:.3f} → {control_end:.3f}"
    )
    assert start == control_start  # the same seeds: the same model and first samples
    assert end - start > 0.5
    assert abs(control_end - control_start) < 0.15 and end - control_end > 0.4
