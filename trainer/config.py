"""The trainer's configuration: one TOML file (stdlib `tomllib`, no extra parser) validated by pydantic.

Defaults are SPEC §6's main setting where it names one (β=0.05, γ=0.1, clip 0.2, KL 0.001, G=8,
temperature 1.0); sizes that the paper ran on 32 H100s are scaled down in the example configs.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.settings import ToolFormat


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default


class ModelConfig(_Section):
    # hf: a transformers model directory; gguf: a GGUF file, dequantised on load (trainable weights);
    # tiny: a random-initialised tiny Qwen2 with a built-in word-level tokenizer (CI, no download).
    source: Literal["hf", "gguf", "tiny"] = "hf"
    path: str | None = None
    # The base model's name as the serving side knows it (vLLM `--served-model-name`): the registry row and
    # the manifest carry it, and publish checks that the server serves it.
    name: str
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"  # auto: cuda when available, else cpu
    seed: int = 0  # tiny only: the random initialisation

    @model_validator(mode="after")
    def _path_needed(self) -> ModelConfig:
        if self.source != "tiny" and not self.path:
            raise ValueError(f"model.path is required for source={self.source!r}")
        return self


class LoraConfig(_Section):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0  # non-zero dropout makes the recorded sampling log-probs differ from the update's
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class DataConfig(_Section):
    # trainer.episodes names: a builder (`squad`, `hotpotqa`, `trec`, …) or `parquet:PATH` / `jsonl:PATH`.
    train: list[str] = Field(default_factory=lambda: ["squad"])
    eval: list[str] = Field(default_factory=lambda: ["squad"])
    data_dir: str = "../shared/data"
    chunk_tokens: int | None = None  # None: each data set's default
    questions: int | None = None  # per episode
    train_episodes: int | None = None  # per data set
    eval_episodes: int = 4  # per data set, taken from the END of the built list, disjoint from training
    # Hold out whole groups of episodes that share this metadata key (`article` for squad-paragraphs): the
    # last groups until eval_episodes is reached, and training never sees an episode of those groups.
    eval_group: str | None = None
    max_chunks: int | None = None  # cut every episode to its first N chunks (short CPU runs)
    # builder knobs (trainer.episodes.BuildConfig)
    articles: int = 3
    paragraphs: int | None = None
    episode_paragraphs: int = Field(default=3, gt=0)  # squad-multichunk: paragraphs per episode
    records: int = 10
    labels: int | None = None
    shots: int = 5


class RolloutConfig(_Section):
    backend: Literal["transformers", "vllm"] = "transformers"
    group_size: int = 8  # G rollouts per instance
    instances_per_iteration: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 2048
    prompt_budget_tokens: int = 6144
    tool_format: ToolFormat = "alpha"
    # `json`: the schema's most calls per reply, as the service's MEMALPHA_POLICY_MAX_CALLS (the decoding
    # constraint is built from it on both sides).
    max_calls: int = Field(default=32, gt=0)
    # OpenAI's frequency penalty on the completion's own tokens, as the service's
    # MEMALPHA_POLICY_FREQUENCY_PENALTY (trainer/sampling/penalty.py; 0: none).
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # The repeat stop's window, as the service's MEMALPHA_POLICY_REPEAT_STOP_CHARS (app/policy/repeats.py;
    # 0: off): a rollout ends where its text begins repeating this many characters it already holds.
    repeat_stop_chars: int = Field(default=0, ge=0)
    # vllm backend: OpenAI-compatible base URL (…/v1) and the served base model; the current adapter is
    # loaded there under a fresh name each iteration.
    vllm_url: str | None = None
    # More vLLM servers of the same base model (all of them, vllm_url included or not): the rollouts go
    # round robin over every live one, the adapter is loaded on each, and a server that fails at the
    # transport level leaves the pool for the rest of that pass (trainer/rollout_pool.py).
    vllm_urls: list[str] = Field(default_factory=list)
    # transformers backend: most sequences in one batched `generate` (every rollout of an iteration runs
    # concurrently; the vllm backend sends them all and the server schedules them)
    batch_size: int = 8
    # vllm backend: most requests in flight per server (0: every rollout at once) and the seconds one request
    # may take. A CPU server with every held-out episode in flight serves each so slowly that replies near the
    # budget pass the default timeout (and a timed-out request is dropped as an infrastructure failure).
    # Neither is a training setting: they change when replies arrive, not the sampling distribution.
    max_in_flight: int = Field(default=0, ge=0)
    request_timeout_s: float = Field(default=900.0, gt=0)

    @model_validator(mode="after")
    def _vllm_needs_url(self) -> RolloutConfig:
        if self.backend == "vllm" and not self.urls:
            raise ValueError("rollout.vllm_url (or vllm_urls) is required for backend='vllm'")
        return self

    @property
    def urls(self) -> list[str]:
        """Every rollout server, in order, each once."""
        return list(dict.fromkeys([*([self.vllm_url] if self.vllm_url else []), *self.vllm_urls]))


class RewardConfig(_Section):
    beta: float = 0.05  # weight of r3 (compression)
    gamma: float = 0.1  # weight of r4 (content quality); r4 is 0 without a judge
    judge_url: str | None = None  # OpenAI-compatible endpoint of the r4 judge; None: r4 off
    judge_model: str | None = None
    # The fixed reader for r1 (SPEC §4): `extractive` (no LLM) or an OpenAI-compatible endpoint.
    answerer: Literal["extractive", "openai"] = "extractive"
    answerer_url: str | None = None
    answerer_model: str | None = None
    answer_top_k: int = 20
    answer_context_tokens: int = 30000
    # How r1's context is filled: "top-k" as SPEC §4 (the same k for both kinds, shrunk until the prompt
    # fits the budget); "budget" as the service answers by default (both kinds' matches, best first, until
    # the budget is full), for a reward at a budget below the episode's size.
    answer_context: Literal["top-k", "budget"] = "top-k"


class GRPOConfig(_Section):
    clip_eps: float = 0.2
    kl_coef: float = 0.001  # 0 disables the KL term and the reference pass
    learning_rate: float = 1e-5
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    epochs: int = 1  # passes over one iteration's samples
    mini_batches: int = 1  # optimizer steps per pass (gradient accumulation within each)
    # Old log-probs of the PPO ratio: the sampler's own (transformers rollouts) or recomputed by the trainer
    # before the update (vLLM rollouts: its kernels differ numerically from the trainer's). With recompute,
    # the sampler's log-probs still give the sampler↔trainer |Δ log p| and KL of every iteration.
    old_logprobs: Literal["sampler", "recompute"] = "sampler"
    # With recompute: truncated importance sampling, each token's policy loss weighted by
    # min(p_trainer_old / p_sampler, tis_cap) (the samples came from the sampler's distribution). None: off.
    tis_cap: float | None = Field(default=None, gt=0)
    # How token losses make the mini-batch loss. seq-mean-token-mean (upstream verl / Mem-alpha): each
    # sequence's token mean, then the mean over sequences - every chunk step weighs the same, however long.
    # token-mean: one mean over all tokens (long completions weigh more). seq-mean-token-sum-norm: each
    # sequence's token sum over the constant loss_norm_tokens (Dr. GRPO; no length bias either way).
    loss_agg_mode: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = (
        "seq-mean-token-mean"
    )
    loss_norm_tokens: int = Field(default=2048, gt=0)  # seq-mean-token-sum-norm's constant (the budget)
    # Completions cut at max_new_tokens are left out of the update (their reward judges a reply the model
    # never finished); they still count in the truncation rate.
    mask_truncated: bool = False
    # Groups whose rewards are all equal have zero advantages: no signal, yet they dilute the loss mean.
    filter_zero_variance: bool = True
    # A control run, not a training setting: each group's advantages are permuted (seeded) before the
    # update, so it moves the weights as much as a real run but without the rewards' signal.
    shuffle_advantages: bool = False
    # Vocabulary projection of the update in chunks of this many positions, recomputed in backward: no
    # [G, L, V] fp32 logits (a 4B model's group of 8 long completions needs tens of GB). None: per sample.
    logprob_chunk_tokens: int | None = Field(default=None, gt=0)
    # Completions of one prompt group run in micro-batches of at most this many padded positions (rows x
    # the longest row), each with its own backward; the shared prompt runs once and its backward once.
    # The gradient equals one batch's. None: the whole group at once.
    micro_batch_tokens: int | None = Field(default=None, gt=0)
    # Activation checkpointing of every decoder layer in the update: a layer keeps only its input and is
    # recomputed in backward (about a third more compute for activations of one hidden state per token
    # and layer). The shared prompt's cache stays exact under it.
    gradient_checkpointing: bool = False


class RunConfig(_Section):
    out_dir: str = "runs/grpo"
    iterations: int = 10
    seed: int = 0
    checkpoint_every: int = 1  # iterations
    eval_every: int = 0  # iterations; 0: only before and after training
    # Held-out evaluation is one greedy rollout per episode (as served); eval_samples > 0 adds that many
    # rollouts per episode at the rollout temperature: the expected reward of the policy being trained.
    eval_samples: int = 0
    # Evaluate only this many held-out episodes per `data.eval_group` (evenly spaced within each group; the
    # groups, the split and training are unchanged): a CPU-sized evaluation. 0: every held-out episode.
    eval_per_group: int = Field(default=0, ge=0)
    policy_prefix: str = "memalpha-lora"  # registry / served names: <prefix>-<run>-<step>-<hash>
    register_policy: bool = True
    database_url: str | None = None  # registry database; None: the service settings' (MEMALPHA_DATABASE_URL)
    time_limit_s: float | None = None  # stop cleanly (checkpoint + adapter) when exceeded
    # Rollouts failed by the infrastructure (policy server, answerer, judge, a lost adapter) are dropped and
    # counted; above this share of one iteration's (or evaluation's) rollouts the run stops before updating.
    max_infra_drop_rate: float = Field(default=0.1, ge=0.0, le=1.0)


# Settings that shape training but were added after runs had started, with their defaults: a run that
# leaves one at its default keeps the fingerprint it had, so it resumes from its checkpoints.
_ADDED_LATER: dict[tuple[str, str], object] = {("reward", "answer_context"): "top-k"}


class TrainConfig(_Section):
    model: ModelConfig
    lora: LoraConfig = Field(default_factory=LoraConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    def fingerprint(self) -> str:
        """Hash of the settings that shape training; resuming under another config is refused. Activation
        checkpointing hashes as its default: it changes memory and time only, the update is bit-identical
        (`test_checkpointing_leaves_the_update_bit_identical`), so a run may turn it on when it resumes."""
        compute_only = {"gradient_checkpointing": GRPOConfig.model_fields["gradient_checkpointing"].default}
        shaping = self.model_copy(update={"grpo": self.grpo.model_copy(update=compute_only)}).model_dump(
            exclude={
                "rollout": {"max_in_flight", "request_timeout_s"},
                "run": {
                    "iterations",
                    "time_limit_s",
                    "register_policy",
                    "database_url",
                    "max_infra_drop_rate",
                },
            }
        )
        for (section, key), default in _ADDED_LATER.items():
            if shaping[section][key] == default:  # hashed only when set: older runs keep their fingerprint
                del shaping[section][key]
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path, overrides: dict[str, object] | None = None) -> TrainConfig:
    """Read a TOML config; `overrides` maps dotted keys (`run.iterations`) to values."""
    with open(path, "rb") as source:
        raw = tomllib.load(source)
    for dotted, value in (overrides or {}).items():
        section = raw
        *parents, key = dotted.split(".")
        for parent in parents:
            section = section.setdefault(parent, {})
        section[key] = value
    return TrainConfig.model_validate(raw)
