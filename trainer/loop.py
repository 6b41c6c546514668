"""One training run: rollouts → rewards → GRPO update, iterated; checkpoints, evaluations, the final
adapter with its manifest, and its registry row.

Reproducible: the instances of iteration i are drawn from a generator seeded by (seed, i), the model's
sampling draws from torch's generator, seeded once and saved in every checkpoint; a resumed run takes
the same path as an uninterrupted one.

Several processes (`accelerate launch`, torchrun): each holds the model and trains on its share of every
mini-batch (`trainer.grpo.optimizer_step`). Rollouts and evaluations run on the main process only and
their results are broadcast: they go to the vLLM servers (which scale by themselves, `rollout.vllm_urls`)
or sample the main process's model, and one process drawing them keeps a run reproducible whatever the
number of processes. Checkpoints, history, plots, the adapter and its registration are the main
process's too; every process resumes from the same checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import torch
from accelerate.utils import broadcast_object_list
from peft import set_peft_model_state_dict
from peft.utils import load_peft_weights
from tqdm import tqdm

from app.contracts.schemas import PolicyOut
from app.memory import TokenCounter
from app.policy.replicas import expand_replicas
from app.policy.vllm_admin import (
    VLLMAdminError,
    load_lora_adapter,
    served_models,
    unload_lora_adapter,
)
from app.settings import Settings
from app.tokens import make_token_counter
from trainer.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from trainer.config import TrainConfig
from trainer.episodes import BuildConfig, Episode, build_episodes
from trainer.eval_progress import FinishedEpisodes, weights_digest
from trainer.grpo import TrainSample, grpo_update, make_accelerator, prepare_update, warmup_schedule
from trainer.judge import ContentJudge, OpenAIContentJudge
from trainer.manifest import adapter_digest, policy_name, trained_serving, write_manifest
from trainer.models import LoadedPolicy, chat_template_sha256, load_policy, pick_device
from trainer.pending_rollouts import PendingRollouts, Rollouts
from trainer.plots import plot_reward_curve
from trainer.rewards import RewardWeights
from trainer.rollout_pool import SamplerPool
from trainer.rollouts import (
    Engine,
    InstanceGroup,
    collect_group,
    episode_records,
    infra_drop_rate,
    make_engine,
    mean_rewards,
)
from trainer.sampling.constraint import JsonCallsConstraint
from trainer.sampling.record import stop_token_ids
from trainer.sampling.transformers_policy import TransformersPolicy
from trainer.sampling.vllm_policy import VLLMSamplingPolicy
from trainer.tiny_model import create_tiny_model

HISTORY_FILE = "history.jsonl"
CURVE_FILE = "reward_curve.png"
EVALS_DIR = "evals"  # per-episode records of every held-out evaluation

_T = TypeVar("_T")


class InfrastructureFailure(RuntimeError):
    """Too many rollouts were failed by the servers: training on the rest would be skewed. The last
    checkpoint is intact; fix the servers and resume."""


@dataclass
class EpisodeSplit:
    train: list[Episode]
    held_out: list[Episode]


@dataclass
class IterationResult:
    row: dict[str, Any]  # the history row: mean rewards, loss statistics, timings
    samples: list[TrainSample]  # what the update trained on (old log-probs = the sampler's)


@dataclass
class RunResult:
    out_dir: Path
    adapter_dir: Path
    name: str
    state: TrainerState
    registry_row: PolicyOut | None = None
    curve: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _build_config(config: TrainConfig, counter: TokenCounter) -> BuildConfig:
    data = config.data
    return BuildConfig(
        data_dir=Path(data.data_dir),
        questions=data.questions,
        chunk_tokens=data.chunk_tokens,
        seed=config.run.seed,
        counter=counter,
        articles=data.articles,
        paragraphs=data.paragraphs,
        episode_paragraphs=data.episode_paragraphs,
        records=data.records,
        labels=data.labels,
        shots=data.shots,
    )


def _cut(episode: Episode, max_chunks: int | None) -> Episode:
    """The episode's first `max_chunks` chunks, without the questions whose answer was only in the chunks
    cut off (an answer found verbatim in the whole stream but not in the kept part): no policy could
    score on those, they would only add noise to r1."""
    if max_chunks is None or len(episode.chunks) <= max_chunks:
        return episode
    chunks = episode.chunks[:max_chunks]
    whole, kept = " ".join(episode.chunks).lower(), " ".join(chunks).lower()
    questions = [
        qa
        for qa in episode.questions
        if not any(a.lower() in whole for a in qa.answers) or any(a.lower() in kept for a in qa.answers)
    ]
    return Episode(
        episode.instance_id,
        episode.data_source,
        chunks,
        questions,
        {
            **episode.metadata,
            "chunks_cut_to": max_chunks,
            "questions_cut": len(episode.questions) - len(questions),
        },
    )


def _group(episode: Episode, key: str | None) -> tuple[str, object]:
    return (
        episode.data_source,
        episode.metadata.get(key, episode.instance_id) if key else episode.instance_id,
    )


def _held_out(episodes: list[Episode], count: int, key: str | None) -> list[Episode]:
    """The last `count` episodes; with a group key, the last whole groups until `count` is reached."""
    if key is None:
        return episodes[-count:] if count else []
    held: list[Episode] = []
    groups = list(dict.fromkeys(_group(episode, key) for episode in episodes))
    while groups and len(held) < count:
        last = groups.pop()
        held = [episode for episode in episodes if _group(episode, key) == last] + held
    return held


def evaluated(held_out: list[Episode], per_group: int, key: str | None) -> list[Episode]:
    """The held-out episodes an evaluation runs: all of them, or `per_group` evenly spaced ones of each
    group (in the held-out order), so that every group (the unit of the paired analysis) stays in."""
    if not per_group:
        return held_out
    groups: dict[object, list[Episode]] = {}
    for episode in held_out:
        groups.setdefault(_group(episode, key), []).append(episode)
    chosen = []
    for members in groups.values():
        count = min(per_group, len(members))
        chosen += [members[index * len(members) // count] for index in range(count)]
    return chosen


def split_episodes(config: TrainConfig, counter: TokenCounter) -> EpisodeSplit:
    """Held-out episodes: the last `eval_episodes` of each eval set (stratified by data set; whole groups
    with `eval_group`); training never sees their ids, nor their groups."""
    build = _build_config(config, counter)
    key = config.data.eval_group
    held_out: list[Episode] = []
    for name in config.data.eval:
        held_out += _held_out(build_episodes(name, build), config.data.eval_episodes, key)
    excluded = {_group(episode, key) for episode in held_out} | {
        _group(episode, None) for episode in held_out
    }
    train: list[Episode] = []
    for name in config.data.train:
        episodes = [
            episode
            for episode in build_episodes(name, build)
            if _group(episode, key) not in excluded and _group(episode, None) not in excluded
        ]
        train += episodes[: config.data.train_episodes]
    split = EpisodeSplit(_cut_all(train, config.data.max_chunks), _cut_all(held_out, config.data.max_chunks))
    if not split.train:
        raise ValueError("no training episodes with questions left after holding out the evaluation episodes")
    return split


def _cut_all(episodes: list[Episode], max_chunks: int | None) -> list[Episode]:
    """Every episode cut; those left without a question are dropped (nothing to score them on)."""
    return [cut for cut in (_cut(episode, max_chunks) for episode in episodes) if cut.questions]


def make_judge(config: TrainConfig) -> ContentJudge | None:
    reward = config.reward
    if reward.judge_url is None:
        return None
    if not reward.judge_model:
        raise ValueError("reward.judge_url needs reward.judge_model")
    return OpenAIContentJudge(reward.judge_url, reward.judge_model)


class Trainer:
    def __init__(self, config: TrainConfig, settings: Settings, *, progress: bool = True) -> None:
        self.config = config
        self.settings = settings
        self.accelerator = make_accelerator(pick_device(config.model.device))
        self.main = self.accelerator.is_main_process
        self.progress = progress and self.main
        self.out_dir = Path(config.run.out_dir).expanduser()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.counter = make_token_counter(settings.tokenizer_file)
        self.split = split_episodes(config, self.counter)
        self.engine: Engine = make_engine(config.reward, settings, self.counter)
        self.judge = make_judge(config)
        self.weights = RewardWeights(beta=config.reward.beta, gamma=config.reward.gamma)
        seed_everything(config.run.seed)
        self.loaded = self._load_model()
        self.constraint = (
            JsonCallsConstraint(
                self.loaded.tokenizer,
                self.loaded.model.config.vocab_size,
                config.rollout.max_calls,
                stop_token_ids(self.loaded.tokenizer, self.loaded.model.generation_config.eos_token_id),
            )
            if config.rollout.tool_format == "json"
            else None
        )
        trainable = [p for p in self.loaded.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            trainable, lr=config.grpo.learning_rate, weight_decay=config.grpo.weight_decay
        )
        total_steps = config.run.iterations * config.grpo.epochs * config.grpo.mini_batches
        self.scheduler = warmup_schedule(optimizer, round(config.grpo.warmup_ratio * total_steps))
        # the scheduler steps the bare optimizer: accelerate's would step it once per process
        self.update, self.optimizer = prepare_update(self.accelerator, self.loaded.model, optimizer)
        self.state = TrainerState(fingerprint=config.fingerprint())
        self.served_adapter: str | None = None  # vllm rollouts: the name the current adapter is loaded under
        # Rollout adapter names are <prefix>-rollout-<nonce>-<weights digest>: equal weights share a name
        # within this process, and a resumed (or second) process never meets a name it did not load.
        self.nonce = secrets.token_hex(4)
        self._reloading = asyncio.Lock()
        self.pending = PendingRollouts(self.out_dir)

    @property
    def tiny_dir(self) -> Path:
        return Path(self.config.model.path) if self.config.model.path else self.out_dir / "tiny-base"

    def _load_model(self) -> LoadedPolicy:
        tiny_dir = None
        if self.config.model.source == "tiny":
            tiny_dir = self.tiny_dir
            if not (tiny_dir / "config.json").exists():
                texts = [text for e in self.split.train + self.split.held_out for text in e.chunks]
                create_tiny_model(tiny_dir, texts, seed=self.config.model.seed)
        # `auto`: this process's accelerator (each of several processes has its own)
        device = self.accelerator.device if self.config.model.device == "auto" else None
        return load_policy(self.config.model, self.config.lora, tiny_dir=tiny_dir, device=device)

    def _share(self, value: _T | None) -> _T:
        """The main process's `value`, on every process."""
        return broadcast_object_list([value])[0]  # type: ignore[no-any-return]

    async def _on_main(self, work: Callable[[], Awaitable[_T]]) -> _T:
        """`work` on the main process only; every process gets its result."""
        return self._share(await work() if self.main else None)

    def resume(self) -> bool:
        found = latest_checkpoint(self.out_dir)
        if found is None:
            return False
        self.state = load_checkpoint(
            found, self.loaded.model, self.optimizer, self.scheduler, self.config.fingerprint()
        )
        return True

    # --- rollouts ---

    def _sampler(self, temperature: float, urls: list[str]) -> TransformersPolicy | SamplerPool:
        rollout = self.config.rollout
        if rollout.backend == "vllm":
            members = {
                url: VLLMSamplingPolicy(
                    url,
                    self.config.model.name,
                    self.loaded.tokenizer,
                    tool_format=rollout.tool_format,
                    counter=self.counter,
                    prompt_budget_tokens=rollout.prompt_budget_tokens,
                    max_new_tokens=rollout.max_new_tokens,
                    temperature=temperature,
                    reload=partial(self._reload_adapter, url),
                    constraint=self.constraint,  # the service's json constraint, applied by vLLM itself
                    frequency_penalty=rollout.frequency_penalty,
                    repeat_stop_chars=rollout.repeat_stop_chars,
                    timeout_s=rollout.request_timeout_s,
                    max_in_flight=rollout.max_in_flight,
                )
                for url in urls
            }
            return SamplerPool(members)
        return TransformersPolicy(
            self.loaded.model,
            self.loaded.tokenizer,
            model_name=self.config.model.name,
            tool_format=rollout.tool_format,
            counter=self.counter,
            prompt_budget_tokens=rollout.prompt_budget_tokens,
            max_new_tokens=rollout.max_new_tokens,
            temperature=temperature,
            max_batch=rollout.batch_size,
            constraint=self.constraint,
            frequency_penalty=rollout.frequency_penalty,
            repeat_stop_chars=rollout.repeat_stop_chars,
        )

    @property
    def _rollout_adapters(self) -> Path:
        return self.out_dir / "rollout-adapters"

    async def _sync_vllm_adapter(self) -> tuple[str | None, list[str]]:
        """vllm rollouts: serve the current adapter under the name of its weights on every rollout server,
        drop the previous one. Returns the name and the servers that serve it: one that cannot be reached
        is left out of this pass (the rest carry the rollouts); none reachable is an infrastructure failure."""
        if self.config.rollout.backend != "vllm":
            return None, []
        # `dns+` names: every pod; one that does not resolve stays a URL, whose load fails below
        urls = await asyncio.to_thread(partial(expand_replicas, self.config.rollout.urls, strict=False))
        staging = self._rollout_adapters / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        self.loaded.model.save_pretrained(staging)
        name = f"{self.config.run.policy_prefix}-rollout-{self.nonce}-{adapter_digest(staging)[:16]}"
        if name == self.served_adapter:
            shutil.rmtree(staging)
        else:
            shutil.rmtree(self._rollout_adapters / name, ignore_errors=True)
            staging.rename(self._rollout_adapters / name)
        previous, self.served_adapter = self.served_adapter, name
        live, failures = [], {}
        for url in urls:
            try:
                # a server that restarted (or was down at the last pass) may lack the current name too
                if name != previous or name not in await served_models(url):
                    await self._load_adapter(url, name)
                if previous not in (None, name) and previous in await served_models(url):
                    await unload_lora_adapter(url, previous)
                live.append(url)
            except (httpx.HTTPError, VLLMAdminError) as error:
                failures[url] = str(error)
        if previous not in (None, name):
            shutil.rmtree(self._rollout_adapters / previous, ignore_errors=True)
        if not live:
            raise InfrastructureFailure(f"no rollout server could load adapter {name}: {failures}")
        for url, reason in failures.items():
            tqdm.write(f"rollout server {url} left out of this pass: {reason}")
        return name, live

    async def _load_adapter(self, url: str, name: str) -> None:
        """Load `name` from its folder; a name the server already holds (a crashed process's leftover) is
        unloaded first, so the server serves these weights and not older ones under the same name."""
        if name in await served_models(url):
            await unload_lora_adapter(url, name)
        await load_lora_adapter(url, name, str((self._rollout_adapters / name).resolve()))

    async def _reload_adapter(self, url: str, name: str) -> None:
        """A rollout got 404 for `name` (the server restarted): load it again, once for all waiting callers."""
        async with self._reloading:
            if name not in await served_models(url):
                await load_lora_adapter(url, name, str((self._rollout_adapters / name).resolve()))

    async def rollouts(
        self,
        episodes: Sequence[Episode],
        *,
        group_size: int,
        temperature: float,
        label: str,
        on_group: Callable[[InstanceGroup], None] | None = None,
    ) -> list[InstanceGroup]:
        """Every rollout of every episode at once: the sampler batches (transformers) or the server
        schedules (vllm) their generations. `on_group` sees each episode's group as soon as it is done."""
        served, urls = await self._sync_vllm_adapter()
        sampler = self._sampler(temperature, urls)
        total = sum(len(e.chunks) for e in episodes) * group_size

        async def group_of(episode: Episode, bar: tqdm[Any]) -> InstanceGroup:
            group = await collect_group(
                episode,
                sampler,
                self.engine,
                group_size=group_size,
                weights=self.weights,
                judge=self.judge,
                model=served,
                concurrency=group_size,
                key_prefix=label,
                on_step=lambda _: bar.update(1),
            )
            if on_group is not None:
                on_group(group)
            return group

        with tqdm(total=total, desc=label, unit="step", disable=not self.progress, leave=False) as bar:
            groups = await asyncio.gather(*(group_of(episode, bar) for episode in episodes))
        await sampler.aclose()
        rate = infra_drop_rate(groups)
        if rate > self.config.run.max_infra_drop_rate:
            reasons = sorted({reason for group in groups for reason in group.dropped})
            raise InfrastructureFailure(
                f"{label}: {rate:.0%} of the rollouts failed on the infrastructure (limit "
                f"{self.config.run.max_infra_drop_rate:.0%}); nothing was trained on them. Causes: {reasons[:5]}"
            )
        return list(groups)

    async def evaluate(self, label: str | None = None) -> dict[str, Any]:
        """Held-out episodes, one greedy rollout each (temperature 0, as served), and, with
        `run.eval_samples`, that many sampled rollouts each (keys `sampled_*`). Per-episode, per-question
        records go to `evals/<label>.jsonl` (default label: the iteration)."""
        return await self._on_main(partial(self._evaluate, label))

    async def _evaluate(self, label: str | None) -> dict[str, Any]:
        # Sampled evaluations draw from the generators training draws from: left as found, an evaluation
        # resumed with fewer episodes (or skipped) cannot shift the training that follows it.
        generators = rng_state()
        try:
            return await self._evaluate_held_out(label)
        finally:
            set_rng_state(generators)

    async def _evaluate_held_out(self, label: str | None) -> dict[str, Any]:
        held_out = evaluated(self.split.held_out, self.config.run.eval_per_group, self.config.data.eval_group)
        label = label or f"iter{self.state.iteration:04d}"
        groups = await self._resumable_rollouts(f"{label}-greedy", held_out, 1, 0.0, "eval")
        row = {"iteration": self.state.iteration, **mean_rewards(groups), "episodes": len(held_out)}
        if samples := self.config.run.eval_samples:
            temperature = self.config.rollout.temperature
            sampled = await self._resumable_rollouts(
                f"{label}-sampled", held_out, samples, temperature, "eval sampled"
            )
            row.update({f"sampled_{key}": value for key, value in mean_rewards(sampled).items()})
        return row

    async def _resumable_rollouts(
        self, name: str, episodes: list[Episode], group_size: int, temperature: float, label: str
    ) -> list[InstanceGroup]:
        """`rollouts` of an evaluation whose finished episodes are kept as each finishes (see
        trainer/eval_progress.py): after a crash it rolls out only the episodes it had not finished. Their
        records are written to `evals/<name>.jsonl` at the end."""
        progress = FinishedEpisodes(
            self.out_dir / EVALS_DIR, name, weights_digest(self.loaded.model, self.config.fingerprint())
        )
        done = progress.load(episodes)
        if done and self.progress:
            tqdm.write(f"{name}: {len(done)} of {len(episodes)} episodes finished before; resuming")
        todo = [episode for episode in episodes if episode.instance_id not in done]
        if todo:
            fresh = await self.rollouts(
                todo, group_size=group_size, temperature=temperature, label=label, on_group=progress.keep
            )
            done.update({group.episode.instance_id: group for group in fresh})
        groups = [done[episode.instance_id] for episode in episodes]
        self._write_records(name, groups)
        progress.clear()
        return groups

    def _write_records(self, name: str, groups: list[InstanceGroup]) -> None:
        folder = self.out_dir / EVALS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        # r1 depends on how much memory the answerer read: recorded, so that an analysis that rebuilds the
        # memory (docs/results/grpo-squad/budget_curve.py) checks it at the same context.
        reward = self.config.reward
        context = {
            "answer_context": reward.answer_context,
            "answer_context_tokens": reward.answer_context_tokens,
        }
        records = [{**record, **context} if "r1" in record else record for record in episode_records(groups)]
        with open(folder / f"{name}.jsonl", "w", encoding="utf-8") as out:
            out.writelines(json.dumps(record, default=str) + "\n" for record in records)

    # --- the loop ---

    def _pick(self, iteration: int) -> list[Episode]:
        rng = random.Random(f"{self.config.run.seed}:instances:{iteration}")
        count = min(self.config.rollout.instances_per_iteration, len(self.split.train))
        return rng.sample(self.split.train, count)

    async def iteration(self) -> IterationResult:
        number = self.state.iteration + 1
        samples, rewards, rollout_s = await self._on_main(partial(self._samples, number))
        rolled = time.perf_counter()
        grpo = self.config.grpo
        rng = random.Random(f"{self.config.run.seed}:minibatches:{self.state.iteration}")
        stats, gap = grpo_update(self.update, self.optimizer, self.scheduler, samples, grpo, rng)
        self.state.iteration = number
        self.state.optimizer_steps += len(stats)
        row: dict[str, Any] = {
            "iteration": number,
            **rewards,
            "samples": len(samples),
            "trained_samples": sum(not (grpo.mask_truncated and s.truncated) for s in samples),
            "optimizer_steps": self.state.optimizer_steps,
            "rollout_s": rollout_s,
            "update_s": time.perf_counter() - rolled,
        }
        if gap is not None:
            row.update(
                sampler_abs_dlogp=gap.abs_dlogp, sampler_max_abs_dlogp=gap.max_abs_dlogp, sampler_kl=gap.kl
            )
        if stats:
            for key in (
                "loss",
                "policy_loss",
                "kl",
                "clip_fraction",
                "ratio_mean",
                "grad_norm",
                "learning_rate",
            ):
                row[key] = sum(getattr(s, key) for s in stats) / len(stats)
            row["tokens"] = sum(s.tokens for s in stats)
        self.state.history.append(row)
        if self.main:
            self._log(row)
        return IterationResult(row=row, samples=samples)

    async def _samples(self, number: int) -> tuple[list[TrainSample], dict[str, float], float]:
        """The iteration's rollouts as training samples, their mean rewards and the seconds they took:
        those kept by an earlier process that stopped before the iteration's checkpoint (see
        trainer/pending_rollouts.py), else new ones, which are kept until that checkpoint."""
        digest = weights_digest(self.loaded.model, self.config.fingerprint())
        replay = self.constraint.allowed if self.constraint is not None else None
        if kept := self.pending.load(number, digest, replay):
            set_rng_state(kept.rng)  # where the unbroken run's update started
            if self.progress:
                tqdm.write(f"iteration {number}: the rollouts kept by an earlier process; updating")
            return kept.samples, kept.rewards, kept.rollout_s
        started = time.perf_counter()
        groups = await self.rollouts(
            self._pick(self.state.iteration),
            group_size=self.config.rollout.group_size,
            temperature=self.config.rollout.temperature,
            label=f"rollouts {number}",
        )
        grpo = self.config.grpo
        flat = [group for group in groups if group.zero_variance]
        shuffle = random.Random(f"{self.config.run.seed}:shuffle:{self.state.iteration}")
        samples: list[TrainSample] = []
        for group in groups:
            if grpo.filter_zero_variance and group.zero_variance:
                continue
            trained = group.train_samples()
            if grpo.shuffle_advantages:
                advantages = [sample.advantage for sample in trained]
                shuffle.shuffle(advantages)
                for sample, advantage in zip(trained, advantages, strict=True):
                    sample.advantage = advantage
            samples += trained
        rewards = {
            **mean_rewards(groups),
            "zero_variance_groups": len(flat) / len(groups) if groups else 0.0,
        }
        rollout_s = time.perf_counter() - started
        self.pending.save(number, Rollouts(samples, rewards, rollout_s, rng_state(), digest))
        return samples, rewards, rollout_s

    def _log(self, row: dict[str, Any]) -> None:
        with open(self.out_dir / HISTORY_FILE, "a", encoding="utf-8") as log:
            log.write(json.dumps(row) + "\n")

    def _checkpoint(self) -> None:
        if self.main:
            save_checkpoint(self.out_dir, self.loaded.model, self.optimizer, self.scheduler, self.state)
            self.pending.clear(self.state.iteration)

    def plot(self) -> Path:
        return plot_reward_curve(
            self.state.history,
            self.state.evals,
            self.out_dir / CURVE_FILE,
            f"GRPO on {self.config.model.name} ({self.out_dir.name})",
        )

    async def run(self, *, resume: bool = True) -> RunResult:
        config = self.config
        if resume:
            self.resume()
        started = time.perf_counter()
        if not self.state.evals:
            self.state.evals.append(await self.evaluate())
            # The base model's evaluation can take hours on a CPU: a crash before the first iteration's
            # checkpoint must not repeat it.
            self._checkpoint()
        bar = tqdm(
            total=config.run.iterations,
            initial=self.state.iteration,
            desc="iterations",
            unit="it",
            disable=not self.progress,
        )
        while self.state.iteration < config.run.iterations:
            # the main process's clock decides: every process must stop after the same iteration
            if self._share(
                config.run.time_limit_s is not None
                and time.perf_counter() - started > config.run.time_limit_s
            ):
                tqdm.write(
                    f"time limit of {config.run.time_limit_s:.0f} s reached after "
                    f"{self.state.iteration} iterations"
                )
                break
            row = (await self.iteration()).row
            bar.update(1)
            bar.set_postfix(
                R=f"{row.get('total', 0):.3f}", r1=f"{row.get('r1', 0):.3f}", r2=f"{row.get('r2', 0):.3f}"
            )
            every = config.run.eval_every
            if every and self.state.iteration % every == 0 and self.state.iteration < config.run.iterations:
                self.state.evals.append(await self.evaluate())
            if self.state.iteration % config.run.checkpoint_every == 0:
                self._checkpoint()
            if self.main:
                self.plot()
        bar.close()
        if self.state.evals[-1]["iteration"] != self.state.iteration:
            self.state.evals.append(await self.evaluate())
            self._checkpoint()
        result = await self._on_main(self.finish)
        result.curve = self.out_dir / CURVE_FILE
        result.timings["run_s"] = time.perf_counter() - started
        return result

    async def finish(self) -> RunResult:
        """Plot the curve, save the adapter + manifest, and register it as a new policy version."""
        self.plot()
        adapter_dir = self.out_dir / "adapter"
        self.loaded.model.save_pretrained(adapter_dir)
        name = policy_name(
            self.config.run.policy_prefix,
            self.out_dir.name,
            self.state.iteration,
            adapter_digest(adapter_dir),
        )
        before, after = self.state.evals[0], self.state.evals[-1]
        metrics = {"eval_before": before, "eval_after": after}
        manifest = {
            "name": name,
            "base_model": self.config.model.name,
            "base_model_path": self.loaded.base_path,
            "chat_template_sha256": chat_template_sha256(self.loaded.tokenizer),
            "serving": trained_serving(self.config, self.counter.name).model_dump(),
            "r4": (
                f"judge {self.config.reward.judge_model} at {self.config.reward.judge_url}"
                if self.judge
                else f"off: no judge configured, r4 = 0 (gamma={self.config.reward.gamma} unused)"
            ),
            "config": self.config.model_dump(),
            "reward_curve": self.state.history,
            "eval": self.state.evals,
            "eval_metrics": metrics,
            "iterations": self.state.iteration,
            "optimizer_steps": self.state.optimizer_steps,
        }
        write_manifest(adapter_dir, manifest)
        result = RunResult(out_dir=self.out_dir, adapter_dir=adapter_dir, name=name, state=self.state)
        if self.config.run.register_policy:
            settings = self.settings
            if self.config.run.database_url:
                settings = settings.model_copy(update={"database_url": self.config.run.database_url})
            from trainer.registry import register_adapter  # the service stack loads only when registering

            result.registry_row = await register_adapter(
                settings,
                name=name,
                base_model=self.config.model.name,
                adapter_path=str(adapter_dir.resolve()),
                metrics=metrics,
                manifest=manifest,
            )
        return result

    async def aclose(self) -> None:
        await self.engine.answerer.aclose()
        if self.judge is not None:
            await self.judge.aclose()


def train(
    config: TrainConfig, settings: Settings, *, resume: bool = True, progress: bool = True
) -> RunResult:
    async def main() -> RunResult:
        trainer = Trainer(config, settings, progress=progress)
        try:
            return await trainer.run(resume=resume)
        finally:
            await trainer.aclose()

    return asyncio.run(main())


def evaluate_adapter(
    config: TrainConfig,
    settings: Settings,
    adapter_dir: Path | None,
    *,
    progress: bool = True,
    label: str = "",
    include_base: bool = True,
) -> dict[str, dict[str, Any]]:
    """Held-out evaluation of the base model (a fresh LoRA adapter is zero: the base model exactly) and,
    when given, of a trained adapter; per-episode records in out_dir/evals/<label>base|adapter-*.jsonl.
    `include_base=False` skips the base model (its records exist: on a CPU server it costs as much as the
    adapter's)."""

    async def main() -> dict[str, dict[str, Any]]:
        trainer = Trainer(config, settings, progress=progress)
        try:
            results = {"base": await trainer.evaluate(f"{label}base")} if include_base else {}
            if adapter_dir is not None:
                device = str(trainer.loaded.device)
                set_peft_model_state_dict(
                    trainer.loaded.model, load_peft_weights(str(adapter_dir), device=device)
                )
                results["adapter"] = await trainer.evaluate(f"{label}adapter")
            return results
        finally:
            await trainer.aclose()

    return asyncio.run(main())
