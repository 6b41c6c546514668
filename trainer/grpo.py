"""The GRPO update on a PEFT LoRA adapter: PPO-clip policy loss, token-mean, optional k3 KL to the reference.

Every chunk step is one sample (its own prompt and completion). For completion token t with advantage A:

    ratio_t = exp(logp_t − old_logp_t)
    pg_t    = −min(ratio_t·A, clip(ratio_t, 1 − ε, 1 + ε)·A)
    kl_t    = exp(ref_t − logp_t) − (ref_t − logp_t) − 1        (k3, always ≥ 0)
    loss    = Σ_t (pg_t + β_kl·kl_t) / (number of completion tokens in the mini-batch)

The reference is the base model itself: the same weights with the adapter disabled, so no second copy of
the model is held. A mini-batch is accumulated one sequence at a time (sequences differ in length and
CPU memory is small) and makes one optimizer step; the token-mean runs over the whole mini-batch.
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


def completion_logprobs(model: torch.nn.Module, sample: TrainSample) -> torch.Tensor:
    """Log-probs of the sample's completion tokens under `model`, one per token."""
    device = next(model.parameters()).device
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids], device=device)
    count = len(sample.completion_ids)
    # Only the logits that predict completion tokens: the vocabulary projection of a long prompt is the
    # largest tensor of the pass otherwise.
    logits = model(input_ids=ids, logits_to_keep=count + 1).logits[0, :-1].float() / sample.temperature
    targets = ids[0, -count:].unsqueeze(-1)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets).squeeze(-1)


@torch.no_grad()
def reference_logprobs(model: PeftModel, samples: Sequence[TrainSample]) -> None:
    """Fill `ref_logprobs` with the base model's log-probs (adapter disabled)."""
    with model.disable_adapter():
        for sample in samples:
            sample.ref_logprobs = completion_logprobs(model, sample).tolist()


@torch.no_grad()
def recompute_old_logprobs(model: torch.nn.Module, samples: Sequence[TrainSample]) -> None:
    """Replace the sampler's log-probs with the trainer's own, before any update of this batch."""
    for sample in samples:
        sample.old_logprobs = completion_logprobs(model, sample).tolist()


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
    order = list(range(len(samples)))
    rng.shuffle(order)
    size = math.ceil(len(order) / max(count, 1))
    for start in range(0, len(order), size):
        yield [samples[index] for index in order[start:start + size]]


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
    for sample in batch:
        logprobs = completion_logprobs(model, sample)
        losses, stats = token_losses(logprobs, sample, config)
        loss = losses.sum() / tokens
        loss.backward()
        totals["loss"] += float(loss.detach())
        for key, value in stats.items():
            totals[key] += float(value)
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
