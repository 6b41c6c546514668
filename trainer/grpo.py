"""The GRPO update on a PEFT LoRA adapter: PPO-clip policy loss, optional k3 KL to the reference.

Every chunk step is one sample (its own prompt and completion). For completion token t with advantage A:

    ratio_t = exp(logp_t − old_logp_t)
    pg_t    = −min(ratio_t·A, clip(ratio_t, 1 − ε, 1 + ε)·A) · w_t   (w_t: truncated IS weight, else 1)
    kl_t    = exp(ref_t − logp_t) − (ref_t − logp_t) − 1        (k3, always ≥ 0)
    loss    = Σ_s c_s Σ_t (pg_t + β_kl·kl_t)

with c_s set by `loss_agg_mode`: 1/(S·|s|) for seq-mean-token-mean (upstream), 1/T for token-mean (T tokens
in the mini-batch), 1/(S·C) for seq-mean-token-sum-norm (S sequences, constant C). Under a decoding
constraint (`json`) every log p is of the masked distribution the service samples (`TrainSample.allowed`),
and under a frequency penalty of the penalised one (`TrainSample.frequency_penalty`); the first completion
token is never penalised (nothing precedes it).

The reference is the base model itself: the same weights with the adapter disabled, so no second copy of
the model is held. A mini-batch is accumulated one prompt group at a time (the samples that share a
prompt run over one pass of that prompt) and makes one optimizer step.

Memory of the update (what makes one GPU enough; every knob leaves the gradient unchanged): the prompt
runs once per group and its keys and values are read by the completions through a cache that never
grows (`_SegmentLayer`), so decoder layers can be checkpointed (`gradient_checkpointing`); the
completions run in micro-batches of a token budget (`micro_batch_tokens`), each with its own backward,
the prompt's backward once at the end with the gradients they left on its keys and values; the
vocabulary projection runs in recomputed chunks (`logprob_chunk_tokens`), never as [G, L, V] fp32 logits.

Processes (`UpdateModel`, under `accelerate`): every process holds the same samples and takes its share of
each mini-batch's prompt groups; the passes that build a gradient run through the module
`Accelerator.prepare` wrapped (DDP across processes), every backward of a step but the last under
`no_sync`, so the gradients of all processes are summed once, in that last backward. One process: the
same calls, and the same numbers as without `accelerate`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object
from peft import PeftModel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.checkpoint import checkpoint
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from trainer.config import GRPOConfig
from trainer.sampling.mask import masked
from trainer.sampling.penalty import penalised

_T = TypeVar("_T")


class PolicyPasses(torch.nn.Module):
    """The update's forward passes behind one module: they are not the model's own forward (a prompt once,
    its completions in micro-batches over its keys and values), and the wrapper `Accelerator.prepare`
    puts around the module (DDP) must see every pass whose backward it is to synchronise."""

    def __init__(self, policy: PeftModel) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, run: Callable[[torch.nn.Module], _T]) -> _T:
        return run(self.policy)


@dataclass
class UpdateModel:
    """The policy as the update's processes see it: `passes` is `PolicyPasses` as `accelerator` prepared it
    (DDP-wrapped when there are several processes), `policy` the same weights, unwrapped."""

    accelerator: Accelerator
    passes: torch.nn.Module
    policy: PeftModel

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes


def prepare_update(
    accelerator: Accelerator, policy: PeftModel, optimizer: Optimizer
) -> tuple[UpdateModel, Optimizer]:
    """The policy's passes and its optimizer prepared by `accelerator` (the optimizer wrapped alike)."""
    passes, prepared = accelerator.prepare(PolicyPasses(policy), optimizer)
    return UpdateModel(accelerator, passes, policy), prepared


def make_accelerator(device: torch.device) -> Accelerator:
    """The update's `Accelerator`: processes on CPUs when `device` is one (DDP over gloo), else on the
    launcher's accelerators; the trainer places the model itself. DDP must not broadcast buffers in its
    forward: processes run different numbers of passes, and every collective has to be matched."""
    return Accelerator(
        cpu=device.type == "cpu",
        device_placement=False,
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )


@cache
def _one_process() -> Accelerator:
    return Accelerator(device_placement=False)  # the model is where its loader put it


def as_update(model: PeftModel | UpdateModel) -> UpdateModel:
    """A bare model is updated as one process: `accelerate` with nothing to wrap."""
    if isinstance(model, UpdateModel):
        return model
    return UpdateModel(_one_process(), PolicyPasses(model), model)


@dataclass
class TrainSample:
    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float]
    advantage: float
    temperature: float  # the sampler's: log-probs are of softmax(logits / temperature)
    ref_logprobs: list[float] | None = None
    truncated: bool = False  # cut at max_new_tokens
    # The sampler's own log-probs when the old ones were recomputed by the trainer (vLLM rollouts).
    sampler_logprobs: list[float] | None = None
    # Constrained decoding (`json`): the packed mask of each completion step; every log-prob is then of
    # the masked distribution the service samples (trainer/sampling/constraint.py says why).
    allowed: torch.Tensor | None = None
    # The frequency penalty the sampler applied (trainer/sampling/penalty.py): every log-prob is then of the
    # penalised distribution, the penalty replayed from the completion's earlier tokens.
    frequency_penalty: float = 0.0


@dataclass(frozen=True)
class SamplerGap:
    """How far the sampler's log-probs are from the trainer's on the same tokens, before any update."""

    abs_dlogp: float  # mean |log p_sampler − log p_trainer| per token
    kl: float  # KL(sampler ‖ trainer) per token, k3 estimate on the sampler's own tokens (≥ 0)
    max_abs_dlogp: float
    tokens: int


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


def _token_logprobs(
    lm_head: torch.nn.Module,
    hidden: torch.Tensor,
    completion: torch.Tensor,
    temperature: float,
    chunk: int | None,
    allowed: torch.Tensor | None = None,
    frequency_penalty: float = 0.0,
) -> torch.Tensor:
    """log p of completion tokens 1 … n from the final hidden states [n, H] of tokens 0 … n − 1 (under the
    sampler's mask and frequency penalty, both replayed from the tokens). With `chunk`, the vocabulary
    projection runs `chunk` positions at a time and is recomputed in backward (activation checkpointing),
    so no [n, V] fp32 logits tensor is ever held for the gradient: only [n] log-probs and [n, H] states."""
    targets = completion[1:]

    def piece(h: torch.Tensor, t: torch.Tensor, a: torch.Tensor | None, step: int) -> torch.Tensor:
        logits = penalised(lm_head(h).float(), completion, frequency_penalty, step)
        logits = masked(logits / temperature, a)
        return torch.log_softmax(logits, dim=-1).gather(-1, t.unsqueeze(-1)).squeeze(-1)

    if chunk is None or len(targets) <= chunk:
        return piece(hidden, targets, allowed, 1)
    parts = []
    for start in range(0, len(targets), chunk):
        h, t = hidden[start : start + chunk], targets[start : start + chunk]
        a = None if allowed is None else allowed[start : start + chunk]
        if torch.is_grad_enabled():
            parts.append(checkpoint(piece, h, t, a, 1 + start, use_reentrant=False))
        else:
            parts.append(piece(h, t, a, 1 + start))
    return torch.cat(parts)


class _SegmentLayer(DynamicLayer):
    """One layer's key/value cache that never grows: `update` returns the fixed prefix (a prompt's keys and
    values, or nothing) joined with the new states and only notes the new states in `written`. A decoder
    layer's forward is then a pure function of its inputs, so activation checkpointing can replay it in
    backward; a growing cache would be appended to a second time by the replay, which is why transformers
    turns the cache off under checkpointing."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None) -> None:
        super().__init__()
        self.written: tuple[torch.Tensor, torch.Tensor] | None = None
        if keys is not None and values is not None:
            self.keys, self.values = keys, values
            self.device = keys.device
            self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.written = (key_states, value_states)
        if not self.is_initialized:
            return key_states, value_states
        rows = key_states.shape[0]  # the prefix is one prompt, shared by every row: a view, no copy
        keys = torch.cat([self.keys.expand(rows, -1, -1, -1), key_states], dim=-2)
        values = torch.cat([self.values.expand(rows, -1, -1, -1), value_states], dim=-2)
        return keys, values


@dataclass
class _PromptSegment:
    """The shared prompt's pass: its last position's final hidden state (which predicts every completion's
    first token) and every layer's keys and values. With gradients on, the completions read detached copies
    (`head`, `prefix`) that collect their gradients, and `backward` sends those through the prompt's own
    graph once, after all completion micro-batches: the result equals one backward of the whole group."""

    head: torch.Tensor
    prefix: list[tuple[torch.Tensor, torch.Tensor]]
    graph: list[torch.Tensor] | None  # the prompt pass's outputs, in the order of `leaves`

    def leaves(self) -> list[torch.Tensor]:
        return [self.head, *(tensor for pair in self.prefix for tensor in pair)]

    def gradient_loss(self) -> torch.Tensor:
        """Σ ⟨output, gradient its copy collected⟩ over the prompt pass's outputs: its backward sends exactly
        those gradients through the prompt's graph (as a loss, so that it can be a synchronised backward)."""
        if self.graph is None:
            raise RuntimeError("the prompt pass ran without gradients, or its backward already ran")
        # An output the adapter does not reach (e.g. layer 0's keys when LoRA leaves k_proj alone) has no
        # graph to send its gradient through.
        terms = [
            (out * leaf.grad).sum()
            for out, leaf in zip(self.graph, self.leaves(), strict=True)
            if leaf.grad is not None and out.requires_grad
        ]
        self.graph = None
        return torch.stack(terms).sum()


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    decoder = base.get_decoder()
    if any(kind != "full_attention" for kind in getattr(decoder.config, "layer_types", None) or []):
        raise ValueError("the shared-prompt pass supports full-attention layers only (no sliding window)")
    return decoder


def _prompt_segment(model: torch.nn.Module, prompt_ids: list[int]) -> _PromptSegment:
    decoder = _decoder(model)
    device = next(model.parameters()).device
    layers = [_SegmentLayer() for _ in range(decoder.config.num_hidden_layers)]
    hidden = decoder(
        input_ids=torch.tensor([prompt_ids], device=device), cache=Cache(layers=list(layers)), use_cache=False
    ).last_hidden_state
    head = hidden[0, -1]
    prefix = [layer.written for layer in layers]
    if any(pair is None for pair in prefix):
        raise RuntimeError("a decoder layer did not write its keys and values")
    pairs = [pair for pair in prefix if pair is not None]
    if not torch.is_grad_enabled():
        return _PromptSegment(head, pairs, None)
    graph = [head, *(tensor for pair in pairs for tensor in pair)]
    leaves = [tensor.detach().requires_grad_() for tensor in graph]
    return _PromptSegment(leaves[0], [(leaves[i], leaves[i + 1]) for i in range(1, len(leaves), 2)], graph)


def token_budget_batches(lengths: Sequence[int], budget: int | None) -> list[list[int]]:
    """Indices of completions packed into micro-batches of at most `budget` padded positions (rows × the
    longest row's positions, where a completion of n tokens takes n − 1: its last token predicts nothing).
    Longest first, so rows of like length share a batch; a completion longer than the budget runs alone.
    None: one batch."""
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    if budget is None:
        return [order] if order else []
    batches: list[list[int]] = []
    for index in order:
        # The batch's first row is its longest: its positions are every row's padded width.
        if batches and (len(batches[-1]) + 1) * (lengths[batches[-1][0]] - 1) <= budget:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def _completion_logprobs(
    model: torch.nn.Module,
    segment: _PromptSegment,
    samples: Sequence[TrainSample],
    chunk_tokens: int | None,
) -> list[torch.Tensor]:
    """Log-probs of the completions of `samples` after the segment's prompt: one right-padded batch over the
    prompt's keys and values (causal attention: a padded tail is never attended to by the tokens before it);
    the vocabulary projection per sample from the final hidden states (`_token_logprobs`), never as one
    [rows, L, V] tensor."""
    device = segment.head.device
    lm_head = model.get_output_embeddings()
    first = lm_head(segment.head).float()
    width = max(len(sample.completion_ids) for sample in samples)
    hidden: torch.Tensor | None = None
    if width > 1:
        # The last completion token predicts nothing: feed the first width-1 tokens, padded with token 0.
        rows = [(sample.completion_ids + [0] * width)[: width - 1] for sample in samples]
        layers = [_SegmentLayer(keys, values) for keys, values in segment.prefix]
        hidden = _decoder(model)(
            input_ids=torch.tensor(rows, device=device), cache=Cache(layers=list(layers)), use_cache=False
        ).last_hidden_state
    out = []
    for row, sample in enumerate(samples):
        count = len(sample.completion_ids)
        targets = torch.tensor(sample.completion_ids, device=device)
        allowed = None if sample.allowed is None else sample.allowed.to(device)
        head_allowed = None if allowed is None else allowed[0]
        logprobs = torch.log_softmax(masked(first / sample.temperature, head_allowed), dim=-1)[targets[:1]]
        if hidden is not None and count > 1:
            tail_allowed = None if allowed is None else allowed[1:]
            tail = _token_logprobs(
                lm_head,
                hidden[row, : count - 1],
                targets,
                sample.temperature,
                chunk_tokens,
                tail_allowed,
                sample.frequency_penalty,
            )
            logprobs = torch.cat([logprobs, tail])
        out.append(logprobs)
    return out


def shared_prompt_logprobs(
    model: torch.nn.Module,
    group: Sequence[TrainSample],
    *,
    chunk_tokens: int | None = None,
    micro_batch_tokens: int | None = None,
) -> list[torch.Tensor]:
    """Log-probs of the completion tokens of samples that share one prompt, one tensor per sample, without
    gradients (old and reference log-probs; `backward_group` is the update's counterpart).

    The prompt (most of the tokens on a memory-writing step) runs once; its keys and values serve every
    completion, which run in right-padded micro-batches of at most `micro_batch_tokens` positions."""
    if torch.is_grad_enabled():
        raise RuntimeError("shared_prompt_logprobs is for no-grad passes; the update uses backward_group")
    segment = _prompt_segment(model, group[0].prompt_ids)
    out: list[torch.Tensor | None] = [None] * len(group)
    for batch in token_budget_batches([len(s.completion_ids) for s in group], micro_batch_tokens):
        logprobs = _completion_logprobs(model, segment, [group[i] for i in batch], chunk_tokens)
        for index, value in zip(batch, logprobs, strict=True):
            out[index] = value
    return [value for value in out if value is not None]


def backward_group(
    model: PeftModel | UpdateModel,
    group: Sequence[TrainSample],
    loss_of: Callable[[Sequence[TrainSample], list[torch.Tensor]], torch.Tensor],
    config: GRPOConfig,
    *,
    sync: bool = True,
) -> None:
    """Accumulate the gradient of a prompt group's loss: the prompt runs once, the completions in
    micro-batches of at most `config.micro_batch_tokens` positions, each with its own backward
    (`loss_of(samples, logprobs)` is that micro-batch's share of the loss), then the prompt's backward
    once with the gradients the micro-batches left on its keys, values and last state. Equal to one
    backward of the whole group's loss; only one micro-batch's activations are held at a time. With
    `config.gradient_checkpointing` the decoder layers keep only their inputs and replay in backward.

    Across processes only the prompt's backward may synchronise the gradients (`sync`: this group is the
    process's last of the step): each process then runs exactly one synchronised backward per step."""
    update = as_update(model)
    accelerator, passes = update.accelerator, update.passes
    with _layer_checkpointing(update.policy, config.gradient_checkpointing):
        with accelerator.no_sync(passes):
            segment = passes(partial(_prompt_segment, prompt_ids=group[0].prompt_ids))
            lengths = [len(sample.completion_ids) for sample in group]
            for batch in token_budget_batches(lengths, config.micro_batch_tokens):
                samples = [group[index] for index in batch]
                logprobs = passes(
                    partial(
                        _completion_logprobs,
                        segment=segment,
                        samples=samples,
                        chunk_tokens=config.logprob_chunk_tokens,
                    )
                )
                accelerator.backward(loss_of(samples, logprobs))
        with nullcontext() if sync else accelerator.no_sync(passes):
            # The gradient loss is built inside a pass: DDP arms its gradient hooks in the forward.
            accelerator.backward(passes(lambda _: segment.gradient_loss()))


@contextmanager
def _layer_checkpointing(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Activation checkpointing of every decoder layer (non-reentrant: the LoRA weights inside need no
    input that requires grad), the segment cache allowed through (`_SegmentLayer` is replay-safe)."""
    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    if enabled:
        for layer in layers:
            layer.gradient_checkpointing = True
            layer._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
            layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        if enabled:
            for layer in layers:
                layer.gradient_checkpointing = False


@torch.no_grad()
def completion_logprobs(model: torch.nn.Module, sample: TrainSample) -> torch.Tensor:
    """Log-probs of the sample's completion tokens under `model`, one per token."""
    return shared_prompt_logprobs(model, [sample])[0]


def _fill_logprobs(
    update: UpdateModel, samples: Sequence[TrainSample], field: str, config: GRPOConfig | None
) -> None:
    """Each process computes its share of the prompt groups; every process gets them all."""
    sizes = {}
    if config is not None:
        sizes = {"chunk_tokens": config.logprob_chunk_tokens, "micro_batch_tokens": config.micro_batch_tokens}
    groups = prompt_groups(samples)
    mine = [
        (index, [lp.tolist() for lp in shared_prompt_logprobs(update.policy, groups[index], **sizes)])
        for index in range(update.rank, len(groups), update.world)
    ]
    for index, values in gather_object(mine):
        for sample, logprobs in zip(groups[index], values, strict=True):
            setattr(sample, field, logprobs)


@torch.no_grad()
def reference_logprobs(
    model: PeftModel | UpdateModel, samples: Sequence[TrainSample], config: GRPOConfig | None = None
) -> None:
    """Fill `ref_logprobs` with the base model's log-probs (adapter disabled)."""
    update = as_update(model)
    with update.policy.disable_adapter():
        _fill_logprobs(update, samples, "ref_logprobs", config)


@torch.no_grad()
def recompute_old_logprobs(
    model: PeftModel | UpdateModel, samples: Sequence[TrainSample], config: GRPOConfig | None = None
) -> SamplerGap | None:
    """Replace the sampler's log-probs with the trainer's own, before any update of this batch; the
    sampler's are kept in `sampler_logprobs` and compared."""
    for sample in samples:
        sample.sampler_logprobs = sample.old_logprobs
    _fill_logprobs(as_update(model), samples, "old_logprobs", config)
    return sampler_gap(samples)


def sampler_gap(samples: Sequence[TrainSample]) -> SamplerGap | None:
    sampler = [lp for s in samples for lp in (s.sampler_logprobs or [])]
    trainer = [lp for s in samples if s.sampler_logprobs is not None for lp in s.old_logprobs]
    if not sampler:
        return None
    delta = torch.tensor(trainer, dtype=torch.float64) - torch.tensor(sampler, dtype=torch.float64)
    # k3 of KL(sampler ‖ trainer) on tokens drawn from the sampler: exp(Δ) − Δ − 1 with Δ = log p_t − log p_s.
    kl = torch.exp(delta) - delta - 1.0
    return SamplerGap(
        abs_dlogp=float(delta.abs().mean()),
        kl=float(kl.mean()),
        max_abs_dlogp=float(delta.abs().max()),
        tokens=len(sampler),
    )


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
    if config.tis_cap is not None and sample.sampler_logprobs is not None:
        sampler = torch.tensor(sample.sampler_logprobs, device=logprobs.device, dtype=logprobs.dtype)
        policy = policy * torch.clamp(torch.exp(old - sampler), max=config.tis_cap)
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


def mini_batches(
    samples: Sequence[TrainSample], count: int, rng: random.Random
) -> Iterator[list[TrainSample]]:
    """`count` near-equal mini-batches in shuffled order; samples of one prompt group stay next to each
    other, so a mini-batch mostly holds whole groups and runs each shared prompt once."""
    groups = prompt_groups(samples)
    rng.shuffle(groups)
    order = [sample for group in groups for sample in group]
    if not order:  # every sample filtered out (zero-variance groups, masked truncations): no step
        return
    size = math.ceil(len(order) / max(count, 1))
    for start in range(0, len(order), size):
        yield order[start : start + size]


def warmup_schedule(optimizer: Optimizer, warmup_steps: int) -> LambdaLR:
    """Linear warm-up to the configured rate, then constant (the upstream recipe's shape)."""
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0)


def sequence_weight(sample: TrainSample, batch: Sequence[TrainSample], config: GRPOConfig) -> float:
    """c_s: what one token loss of `sample` weighs in the mini-batch loss (`loss_agg_mode`)."""
    if config.loss_agg_mode == "token-mean":
        return 1.0 / sum(len(s.completion_ids) for s in batch)
    if config.loss_agg_mode == "seq-mean-token-mean":
        return 1.0 / (len(batch) * len(sample.completion_ids))
    return 1.0 / (len(batch) * config.loss_norm_tokens)


def optimizer_step(
    model: PeftModel | UpdateModel,
    optimizer: Optimizer,
    scheduler: LambdaLR,
    batch: Sequence[TrainSample],
    config: GRPOConfig,
) -> UpdateStats:
    """One optimizer step over a mini-batch: gradients accumulated prompt group by prompt group, the loss
    aggregated as `loss_agg_mode` says. Several processes each take every `world`-th prompt group of the
    mini-batch; the weights `c_s` are the whole mini-batch's, scaled by `world` because the synchronised
    backward averages the processes' gradients, so the step equals one process's over the whole batch."""
    tokens = sum(len(sample.completion_ids) for sample in batch)
    if tokens == 0 or not all(sample.completion_ids for sample in batch):
        raise ValueError("a mini-batch with an empty completion")
    update = as_update(model)
    accelerator = update.accelerator
    groups = prompt_groups(batch)
    mine, share = groups[update.rank :: update.world], float(update.world)
    if not mine:  # fewer groups than processes: this one still takes part in the gradient sync, adding 0
        mine, share = groups[:1], 0.0
    update.policy.train()
    optimizer.zero_grad(set_to_none=True)
    totals = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "clipped": 0.0, "ratio": 0.0}

    def loss_of(samples: Sequence[TrainSample], logprobs_of: list[torch.Tensor]) -> torch.Tensor:
        sums = []
        for sample, logprobs in zip(samples, logprobs_of, strict=True):
            losses, stats = token_losses(logprobs, sample, config)
            sums.append(losses.sum() * sequence_weight(sample, batch, config))
            for key, value in stats.items():
                totals[key] += float(value) * share / update.world
        loss = torch.stack(sums).sum()
        totals["loss"] += float(loss.detach()) * share / update.world
        return loss * share

    for index, group in enumerate(mine):
        backward_group(update, group, loss_of, config, sync=index == len(mine) - 1)
    summed = accelerator.reduce(
        torch.tensor(list(totals.values()), dtype=torch.float64, device=accelerator.device), "sum"
    )
    totals = dict(zip(totals, summed.tolist(), strict=True))
    trainable = [p for p in update.policy.parameters() if p.requires_grad]
    grad_norm = float(accelerator.clip_grad_norm_(trainable, config.max_grad_norm))
    learning_rate = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    update.policy.eval()
    return UpdateStats(
        loss=totals["loss"],
        policy_loss=totals["policy_loss"] / tokens,
        kl=totals["kl"] / tokens,
        clip_fraction=totals["clipped"] / tokens,
        ratio_mean=totals["ratio"] / tokens,
        grad_norm=grad_norm,
        tokens=tokens,
        learning_rate=learning_rate,
    )


def grpo_update(
    model: PeftModel | UpdateModel,
    optimizer: Optimizer,
    scheduler: LambdaLR,
    samples: Sequence[TrainSample],
    config: GRPOConfig,
    rng: random.Random,
) -> tuple[list[UpdateStats], SamplerGap | None]:
    """All optimizer steps of one iteration: `epochs` passes of `mini_batches` steps over the samples.
    Old (and reference) log-probs stay fixed for the whole iteration, as PPO's clipping needs. Returns the
    steps' statistics and, with recomputed old log-probs, the sampler↔trainer gap. Several processes:
    each holds all the samples (the same mini-batches) and trains on its share (`optimizer_step`)."""
    update = as_update(model)
    usable = [
        sample
        for sample in samples
        if sample.completion_ids and not (config.mask_truncated and sample.truncated)
    ]
    gap = recompute_old_logprobs(update, usable, config) if config.old_logprobs == "recompute" else None
    if config.kl_coef > 0:
        reference_logprobs(update, usable, config)
    stats = []
    for _ in range(config.epochs):
        for batch in mini_batches(usable, config.mini_batches, rng):
            stats.append(optimizer_step(update, optimizer, scheduler, batch, config))
    return stats, gap
