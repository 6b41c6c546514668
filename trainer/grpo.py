"""The GRPO update on a PEFT LoRA adapter: PPO-clip policy loss, token-mean, optional k3 KL to the reference.

Every chunk step is one sample (its own prompt and completion). For completion token t with advantage A:

    ratio_t = exp(logp_t − old_logp_t)
    pg_t    = −min(ratio_t·A, clip(ratio_t, 1 − ε, 1 + ε)·A)
    kl_t    = exp(ref_t − logp_t) − (ref_t − logp_t) − 1        (k3, always ≥ 0)
    loss    = Σ_t (pg_t + β_kl·kl_t) / (number of completion tokens in the mini-batch)

The reference is the base model itself: the same weights with the adapter disabled, so no second copy of
the model is held. A mini-batch is accumulated one prompt group at a time (the samples that share a
prompt run as one batch over one pass of that prompt) and makes one optimizer step; the token-mean runs
over the whole mini-batch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from trainer.config import GRPOConfig


@dataclass
class TrainSample:
    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float]
    advantage: float
    temperature: float  # the sampler's: log-probs are of softmax(logits / temperature)
    ref_logprobs: list[float] | None = None


@dataclass(frozen=True)
class UpdateStats:
    loss: float
    policy_loss: float
    kl: float
    clip_fraction: float
    ratio_mean: float
    grad_norm: float
    tokens: int
    learning_rate: float


def prompt_groups(samples: Sequence[TrainSample]) -> list[list[TrainSample]]:
    """Samples with the same prompt and temperature, in first-seen order: the G rollouts of an instance
    share the prompt of each step whose memory they reached alike (always the first chunk)."""
    groups: dict[tuple[tuple[int, ...], float], list[TrainSample]] = {}
    for sample in samples:
        groups.setdefault((tuple(sample.prompt_ids), sample.temperature), []).append(sample)
    return list(groups.values())


def shared_prompt_logprobs(model: torch.nn.Module, group: Sequence[TrainSample]) -> list[torch.Tensor]:
    """Log-probs of the completion tokens of samples that share one prompt, one tensor per sample.

    The prompt (most of the tokens on a memory-writing step) runs once; its key/value cache is repeated
    for every completion, which then runs as one right-padded batch (causal attention: a padded tail is
    never attended to by the tokens before it). Exact: every completion's gradient reaches the prompt's
    activations through the repeated cache, so backward also crosses the prompt once.
    """
    device = next(model.parameters()).device
    prompt = torch.tensor([group[0].prompt_ids], device=device)
    # The prompt's last position predicts every completion's first token; no other prompt logits are needed
    # (the vocabulary projection of a long prompt would be the largest tensor of the pass).
    head = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    first = head.logits[0, -1].float()
    width = max(len(sample.completion_ids) for sample in group)
    rest: torch.Tensor | None = None
    if width > 1:
        cache = head.past_key_values
        cache.batch_repeat_interleave(len(group))
        # The last completion token predicts nothing: feed the first width-1 tokens, padded with token 0.
        rows = [(sample.completion_ids + [0] * width)[: width - 1] for sample in group]
        rest = model(input_ids=torch.tensor(rows, device=device), past_key_values=cache, use_cache=True).logits.float()
    out = []
    for row, sample in enumerate(group):
        count = len(sample.completion_ids)
        logits = first.unsqueeze(0) if rest is None else torch.cat([first.unsqueeze(0), rest[row, : count - 1]])
        targets = torch.tensor(sample.completion_ids, device=device).unsqueeze(-1)
        out.append(torch.log_softmax(logits[:count] / sample.temperature, dim=-1).gather(-1, targets).squeeze(-1))
    return out


def completion_logprobs(model: torch.nn.Module, sample: TrainSample) -> torch.Tensor:
    """Log-probs of the sample's completion tokens under `model`, one per token."""
    return shared_prompt_logprobs(model, [sample])[0]


def _fill_logprobs(model: torch.nn.Module, samples: Sequence[TrainSample], field: str) -> None:
    for group in prompt_groups(samples):
        for sample, logprobs in zip(group, shared_prompt_logprobs(model, group), strict=True):
            setattr(sample, field, logprobs.tolist())


@torch.no_grad()
def reference_logprobs(model: PeftModel, samples: Sequence[TrainSample]) -> None:
    """Fill `ref_logprobs` with the base model's log-probs (adapter disabled)."""
    with model.disable_adapter():
        _fill_logprobs(model, samples, "ref_logprobs")


@torch.no_grad()
def recompute_old_logprobs(model: torch.nn.Module, samples: Sequence[TrainSample]) -> None:
    """Replace the sampler's log-probs with the trainer's own, before any update of this batch."""
    _fill_logprobs(model, samples, "old_logprobs")


def token_losses(
    logprobs: torch.Tensor, sample: TrainSample, config: GRPOConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss of one sequence and its diagnostics (summed over tokens)."""
    old = torch.tensor(sample.old_logprobs, device=logprobs.device, dtype=logprobs.dtype)
    advantage = sample.advantage
    ratio = torch.exp(logprobs - old)
    unclipped = -advantage * ratio
    clipped = -advantage * torch.clamp(ratio, 1.0 - config.clip_eps, 1.0 + config.clip_eps)
    policy = torch.maximum(unclipped, clipped)
    loss = policy
    kl = torch.zeros_like(policy)
    if config.kl_coef > 0:
        if sample.ref_logprobs is None:
            raise ValueError("kl_coef > 0 needs reference log-probs (reference_logprobs)")
        ref = torch.tensor(sample.ref_logprobs, device=logprobs.device, dtype=logprobs.dtype)
        log_ratio = ref - logprobs
        kl = torch.exp(log_ratio) - log_ratio - 1.0
        loss = policy + config.kl_coef * kl
    stats = {
        "policy_loss": policy.detach().sum(),
        "kl": kl.detach().sum(),
        "clipped": (clipped > unclipped).detach().float().sum(),
        "ratio": ratio.detach().sum(),
    }
    return loss, stats


def mini_batches(samples: Sequence[TrainSample], count: int, rng: random.Random) -> Iterator[list[TrainSample]]:
    """`count` near-equal mini-batches in shuffled order; samples of one prompt group stay next to each
    other, so a mini-batch mostly holds whole groups and runs each shared prompt once."""
    groups = prompt_groups(samples)
    rng.shuffle(groups)
    order = [sample for group in groups for sample in group]
    size = math.ceil(len(order) / max(count, 1))
    for start in range(0, len(order), size):
        yield order[start:start + size]


def warmup_schedule(optimizer: Optimizer, warmup_steps: int) -> LambdaLR:
    """Linear warm-up to the configured rate, then constant (the upstream recipe's shape)."""
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0)


def optimizer_step(
    model: torch.nn.Module, optimizer: Optimizer, scheduler: LambdaLR, batch: Sequence[TrainSample],
    config: GRPOConfig,
) -> UpdateStats:
    """One optimizer step over a mini-batch: gradients accumulated sequence by sequence, token-mean loss."""
    tokens = sum(len(sample.completion_ids) for sample in batch)
    if tokens == 0:
        raise ValueError("a mini-batch without completion tokens")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    totals = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "clipped": 0.0, "ratio": 0.0}
    for group in prompt_groups(batch):
        sums = []
        for sample, logprobs in zip(group, shared_prompt_logprobs(model, group), strict=True):
            losses, stats = token_losses(logprobs, sample, config)
            sums.append(losses.sum())
            for key, value in stats.items():
                totals[key] += float(value)
        loss = torch.stack(sums).sum() / tokens
        loss.backward()
        totals["loss"] += float(loss.detach())
    trainable = [p for p in model.parameters() if p.requires_grad]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm))
    learning_rate = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    model.eval()
    return UpdateStats(
        loss=totals["loss"], policy_loss=totals["policy_loss"] / tokens, kl=totals["kl"] / tokens,
        clip_fraction=totals["clipped"] / tokens, ratio_mean=totals["ratio"] / tokens, grad_norm=grad_norm,
        tokens=tokens, learning_rate=learning_rate,
    )


def grpo_update(
    model: PeftModel, optimizer: Optimizer, scheduler: LambdaLR, samples: Sequence[TrainSample],
    config: GRPOConfig, rng: random.Random,
) -> list[UpdateStats]:
    """All optimizer steps of one iteration: `epochs` passes of `mini_batches` steps over the samples.
    Old (and reference) log-probs stay fixed for the whole iteration, as PPO's clipping needs."""
    usable = [sample for sample in samples if sample.completion_ids]
    if config.old_logprobs == "recompute":
        recompute_old_logprobs(model, usable)
    if config.kl_coef > 0:
        reference_logprobs(model, usable)
    stats = []
    for _ in range(config.epochs):
        for batch in mini_batches(usable, config.mini_batches, rng):
            stats.append(optimizer_step(model, optimizer, scheduler, batch, config))
    return stats
