"""G rollouts per instance through the app's engine (`trainer.runner`), scored with SPEC §6's rewards,
and turned into GRPO training samples with group advantages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai

from app.errors import Unavailable
from app.memory import Applier, MemoryLimits, TokenCounter
from app.policy.backend import PolicyBackend, PolicyReply
from app.qa import Answerer, ExtractiveAnswerer, OpenAIAnswerer
from app.retrieval import Retriever
from app.settings import Settings
from trainer.config import RewardConfig
from trainer.episodes import Episode
from trainer.grpo import TrainSample
from trainer.judge import ContentJudge
from trainer.rewards import (
    RewardWeights,
    StepReward,
    accuracy_reward,
    compression_reward,
    content_reward,
    group_advantages,
    judged_writes,
    step_reward,
    tool_success_reward,
)
from trainer.runner import EpisodeRun, QASettings, StepRecord, run_episode
from trainer.sampling.record import TokenSample


@dataclass
class Engine:
    """The service's memory engine and QA path, as the trainer runs them."""

    applier: Applier
    answerer: Answerer
    retriever: Retriever
    qa: QASettings
    counter: TokenCounter


def make_engine(reward: RewardConfig, settings: Settings, counter: TokenCounter) -> Engine:
    limits = MemoryLimits(
        core_tokens=settings.core_token_limit,
        max_item_tokens=settings.max_item_tokens,
        max_items_per_kind=settings.max_items_per_kind,
    )
    answerer: Answerer
    if reward.answerer == "openai":
        if not (reward.answerer_url and reward.answerer_model):
            raise ValueError("reward.answerer = 'openai' needs answerer_url and answerer_model")
        answerer = OpenAIAnswerer(base_url=reward.answerer_url, model=reward.answerer_model)
    else:
        answerer = ExtractiveAnswerer()
    return Engine(
        applier=Applier(limits, counter),
        answerer=answerer,
        # r1 retrieves with the paper's scorer, named here so a change of the service's default does not
        # silently change the reward: rank-bm25's BM25Okapi with its defaults on plain tokens (SPEC §4).
        retriever=Retriever(scorer="okapi"),
        qa=QASettings(
            k=reward.answer_top_k, budget_tokens=reward.answer_context_tokens, mode=reward.answer_context
        ),
        counter=counter,
    )


@dataclass
class ScoredStep:
    rollout: int
    step: int
    reward: StepReward
    sample: TokenSample | None  # None: the policy failed on this chunk (nothing was sampled)
    advantage: float = 0.0


@dataclass
class InstanceGroup:
    episode: Episode
    runs: list[EpisodeRun]  # the scored rollouts (those the infrastructure did not fail)
    steps: list[ScoredStep]
    dropped: list[str] = field(default_factory=list)  # why each other rollout was dropped

    def train_samples(self) -> list[TrainSample]:
        return [
            TrainSample(
                prompt_ids=s.sample.prompt_ids,
                completion_ids=s.sample.completion_ids,
                old_logprobs=s.sample.logprobs,
                advantage=s.advantage,
                temperature=s.sample.temperature,
                truncated=s.sample.truncated,
                allowed=s.sample.allowed,
                frequency_penalty=s.sample.frequency_penalty,
            )
            for s in self.steps
            if s.sample is not None and s.sample.completion_ids
        ]

    @property
    def zero_variance(self) -> bool:
        """Every scored step got the same reward: all advantages are 0, the group teaches nothing."""
        return len({round(step.reward.total, 9) for step in self.steps if step.sample is not None}) <= 1


def _extras(reply: PolicyReply) -> TokenSample | None:
    extras = getattr(reply, "extras", None)
    return TokenSample.from_extras(extras) if extras else None


async def _step_r4(step: StepRecord, judge: ContentJudge | None) -> float:
    if judge is None:
        return 0.0
    writes = judged_writes(step.results)
    verdicts = await judge.judge([(kind, content) for _, kind, content in writes]) if writes else []
    return content_reward(
        len(step.results), {pos: ok for (pos, _, _), ok in zip(writes, verdicts, strict=True)}
    )


async def score_run(
    run: EpisodeRun, rollout: int, weights: RewardWeights, judge: ContentJudge | None
) -> list[ScoredStep]:
    r1 = accuracy_reward([answer.score for answer in run.answers])
    r3 = compression_reward(run.memory_tokens, run.input_tokens)
    scored = []
    for step in run.steps:
        r2 = tool_success_reward([result.status for result in step.results])
        r4 = await _step_r4(step, judge)
        scored.append(
            ScoredStep(
                rollout=rollout,
                step=step.index,
                reward=step_reward(r1, r2, r3, r4, weights),
                sample=step.extras,
            )
        )
    return scored


async def collect_group(
    episode: Episode,
    policy: PolicyBackend,
    engine: Engine,
    *,
    group_size: int,
    weights: RewardWeights,
    judge: ContentJudge | None = None,
    model: str | None = None,
    concurrency: int = 1,
    key_prefix: str = "rollout",
    on_step: Callable[[StepRecord], None] | None = None,
) -> InstanceGroup:
    """G rollouts of one episode, their rewards, and advantages over the group of all their steps that
    produced a sample. Rollouts that the infrastructure failed (policy call, answerer, judge) are dropped
    before the advantages are computed; `dropped` says why."""
    gate = asyncio.Semaphore(max(concurrency, 1))

    async def rollout(index: int) -> EpisodeRun:
        async with gate:
            return await run_episode(
                episode,
                policy,
                method=f"{key_prefix}-{index}",
                applier=engine.applier,
                answerer=engine.answerer,
                retriever=engine.retriever,
                qa=engine.qa,
                counter=engine.counter,
                model=model,
                key=(key_prefix, episode.instance_id, index),
                step_extras=_extras,
                on_step=on_step,
            )

    kept: list[EpisodeRun] = []
    steps: list[ScoredStep] = []
    dropped: list[str] = []
    for index, run in enumerate(await asyncio.gather(*(rollout(index) for index in range(group_size)))):
        # An infrastructure failure is not the policy's doing: scoring it would hand the policy a negative
        # advantage for a server's outage, so the rollout is left out of the group (and counted).
        if (error := run.infra_error) is not None:
            dropped.append(error)
            continue
        try:
            scored = await score_run(run, index, weights, judge)
        except (Unavailable, openai.OpenAIError) as error:  # the r4 judge could not be reached
            dropped.append(f"judge: {error}")
            continue
        kept.append(run)
        steps += scored
    trainable = [step for step in steps if step.sample is not None]
    for step, advantage in zip(trainable, group_advantages([s.reward.total for s in trainable]), strict=True):
        step.advantage = advantage
    return InstanceGroup(episode=episode, runs=kept, steps=steps, dropped=dropped)


def mean_rewards(groups: Sequence[InstanceGroup]) -> dict[str, float]:
    """Mean r1..r4 and R over every scored step, plus r1 per episode run (the held-out measure)."""
    steps = [step for group in groups for step in group.steps]
    runs = [run for group in groups for run in group.runs]
    dropped = sum(len(group.dropped) for group in groups)
    if not steps:
        return {"infra_dropped": float(dropped)}
    out = {
        name: sum(getattr(step.reward, name) for step in steps) / len(steps)
        for name in ("r1", "r2", "r3", "r4", "total")
    }
    out["episode_score"] = sum(run.score or 0.0 for run in runs) / len(runs)
    # As the service records parse errors (a reply cut at its token budget is one): what publish's canary
    # compares with (trainer/canary.py).
    records = [step for run in runs for step in run.steps]
    out["parse_error_rate"] = sum(
        bool(step.parse_errors) or (isinstance(step.extras, TokenSample) and step.extras.truncated)
        for step in records
    ) / len(records)
    out["steps"] = float(len(steps))
    out["infra_dropped"] = float(dropped)
    sampled = [step.sample for step in steps if step.sample is not None]
    out["truncation_rate"] = sum(s.truncated for s in sampled) / len(sampled) if sampled else 0.0
    out["repeat_stop_rate"] = sum(s.repeat_stopped for s in sampled) / len(sampled) if sampled else 0.0
    out["completion_tokens"] = sum(len(s.completion_ids) for s in sampled) / len(sampled) if sampled else 0.0
    for source in sorted({group.episode.data_source for group in groups}):
        scores = [run.score or 0.0 for group in groups for run in group.runs if run.data_source == source]
        if scores:
            out[f"r1_{source}"] = sum(scores) / len(scores)
    return out


def infra_drop_rate(groups: Sequence[InstanceGroup]) -> float:
    """Share of the rollouts that the infrastructure failed (dropped, not scored)."""
    dropped = sum(len(group.dropped) for group in groups)
    total = dropped + sum(len(group.runs) for group in groups)
    return dropped / total if total else 0.0


def episode_records(groups: Sequence[InstanceGroup]) -> list[dict[str, Any]]:
    """One record per scored rollout, per question: what a paired comparison of two evaluations needs."""
    records = []
    for group in groups:
        for index, run in enumerate(group.runs):
            samples = [step.extras for step in run.steps if step.extras is not None]
            records.append(
                {
                    "instance_id": run.instance_id,
                    "rollout": index,
                    "data_source": run.data_source,
                    "article": group.episode.metadata.get("article"),
                    "r1": run.score,
                    "memory_tokens": run.memory_tokens,
                    "completion_tokens": sum(len(s.completion_ids) for s in samples),
                    "truncated": any(s.truncated for s in samples),
                    "raw_text": [step.raw_text for step in run.steps],
                    "questions": [
                        {"question": a.question, "gold": a.gold, "prediction": a.prediction, "score": a.score}
                        for a in run.answers
                    ],
                }
            )
        records += [{"instance_id": group.episode.instance_id, "dropped": reason} for reason in group.dropped]
    return records
