"""The rewards of SPEC §6 and GRPO's group advantages.

- r1 (episode): mean QA score of the final memory over the episode's questions (the scores come from the
  app's QA path and the per-source scorers, see `trainer.runner`); an episode without questions gets 0.
- r2 (step): successful calls / parsed calls; `skipped` (duplicates, no-op updates) counts as a failure;
  a step with no parsed call gets 0.
- r3 (episode): `1 − memory_tokens / input_tokens`, unclipped (a memory larger than its input is negative);
  both counted as `trainer.runner` counts them (core + item contents; the chunks).
- r4 (step): over the step's parsed calls, an insert or update that was applied (`ok`) scores the judge's
  verdict on the written content for its memory type; deletes, and calls that wrote nothing, score 0;
  the mean of these; no parsed call → 0. Without a judge r4 is 0 for every step (γ has no effect).
- R = r1 + r2 + β·r3 + γ·r4 per step.
- One GRPO group = every step of every rollout of one instance; advantage = (R − mean) / (std + 1e-6)
  with the sample standard deviation (n − 1, as `torch.std` and verl's GRPO use). A group of one step
  has no spread to learn from: its advantage is 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.memory import OpResult, OpStatus, Tool

ADVANTAGE_EPS = 1e-6
WRITE_TOOLS = frozenset({Tool.INSERT.value, Tool.UPDATE.value})


@dataclass(frozen=True)
class RewardWeights:
    beta: float = 0.05
    gamma: float = 0.1


@dataclass(frozen=True)
class StepReward:
    r1: float
    r2: float
    r3: float
    r4: float
    total: float


def accuracy_reward(scores: Sequence[float]) -> float:
    """r1: the mean per-question score."""
    return sum(scores) / len(scores) if scores else 0.0


def tool_success_reward(statuses: Sequence[OpStatus]) -> float:
    """r2: the fraction of parsed calls that applied (`ok`)."""
    if not statuses:
        return 0.0
    return sum(status == "ok" for status in statuses) / len(statuses)


def compression_reward(memory_token_count: int, input_token_count: int) -> float:
    """r3: 1 − memory/input, unclipped."""
    if input_token_count <= 0:
        raise ValueError("compression reward needs a non-empty input")
    return 1.0 - memory_token_count / input_token_count


def judged_writes(results: Sequence[OpResult]) -> list[tuple[int, str, str]]:
    """The (position, memory_type, content) of each applied insert/update: what r4's judge looks at."""
    return [
        (position, result.memory_type, result.after)
        for position, result in enumerate(results)
        if result.tool in WRITE_TOOLS and result.status == "ok" and result.after
    ]


def content_reward(call_count: int, verdicts: dict[int, bool]) -> float:
    """r4: `verdicts` maps a call's position (see `judged_writes`) to the judge's yes/no; every other
    call (deletes, failed or skipped calls) scores 0."""
    if call_count == 0:
        return 0.0
    return sum(1.0 for position, valid in verdicts.items() if valid and position < call_count) / call_count


def step_reward(r1: float, r2: float, r3: float, r4: float, weights: RewardWeights) -> StepReward:
    total = r1 + r2 + weights.beta * r3 + weights.gamma * r4
    return StepReward(r1=r1, r2=r2, r3=r3, r4=r4, total=total)


def group_advantages(rewards: Sequence[float]) -> list[float]:
    """(R − mean) / (std + 1e-6) over one instance's group of steps."""
    n = len(rewards)
    if n < 2:
        return [0.0] * n
    mean = sum(rewards) / n
    std = math.sqrt(sum((reward - mean) ** 2 for reward in rewards) / (n - 1))
    return [(reward - mean) / (std + ADVANTAGE_EPS) for reward in rewards]
