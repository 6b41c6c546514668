"""SPEC §6 rewards against hand-computed values: the functions alone, then a whole GRPO group driven
through the app's engine and QA path by a scripted policy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from app.memory import OpResult, WordTokenCounter
from app.memory.state import MemoryState
from app.policy.backend import PolicyError, Usage
from app.policy.parser import ToolCall
from app.policy.sentences import split_sentences
from app.settings import Settings
from trainer.config import RewardConfig
from trainer.episodes import QA, Episode
from trainer.rewards import (
    RewardWeights,
    accuracy_reward,
    compression_reward,
    content_reward,
    group_advantages,
    judged_writes,
    step_reward,
    tool_success_reward,
)
from trainer.rollouts import collect_group, infra_drop_rate, make_engine, mean_rewards
from trainer.sampling.record import SampledReply, TokenSample


def test_r1_is_the_mean_question_score() -> None:
    assert accuracy_reward([1.0, 0.0, 0.5]) == pytest.approx(0.5)
    assert accuracy_reward([]) == 0.0


def test_r2_counts_skipped_as_failure_and_no_call_as_zero() -> None:
    assert tool_success_reward(["ok", "skipped", "error", "ok"]) == pytest.approx(0.5)
    assert tool_success_reward(["skipped"]) == 0.0
    assert tool_success_reward([]) == 0.0


def test_r3_is_unclipped_compression() -> None:
    assert compression_reward(30, 120) == pytest.approx(0.75)
    assert compression_reward(150, 100) == pytest.approx(-0.5)
    with pytest.raises(ValueError):
        compression_reward(10, 0)


def test_r4_judges_applied_writes_and_scores_deletes_zero() -> None:
    results = [
        OpResult("new_memory_insert", "semantic", "ok", item_id="a", after="Paris is in France."),
        OpResult("memory_update", "core", "ok", before="", after="Alice lives in Paris."),
        OpResult("memory_delete", "semantic", "ok", item_id="a", before="Paris is in France."),
        OpResult("new_memory_insert", "episodic", "error", error="content must be a non-empty string"),
    ]
    assert judged_writes(results) == [
        (0, "semantic", "Paris is in France."),
        (1, "core", "Alice lives in Paris."),
    ]
    assert content_reward(len(results), {0: True, 1: False}) == pytest.approx(0.25)
    assert content_reward(len(results), {0: True, 1: True}) == pytest.approx(0.5)
    assert content_reward(0, {}) == 0.0


def test_step_reward_weights() -> None:
    reward = step_reward(0.5, 0.5, 0.75, 0.25, RewardWeights(beta=0.05, gamma=0.1))
    assert reward.total == pytest.approx(0.5 + 0.5 + 0.0375 + 0.025)
    assert step_reward(1.0, 0.0, 0.5, 1.0, RewardWeights(beta=0.2, gamma=0.0)).total == pytest.approx(1.1)


def test_group_advantages_use_the_sample_std() -> None:
    advantages = group_advantages([1.0, 2.0, 3.0])  # mean 2, std sqrt(2/2) = 1
    assert advantages == pytest.approx([-1 / (1 + 1e-6), 0.0, 1 / (1 + 1e-6)])
    assert group_advantages([0.7, 0.7, 0.7]) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    assert group_advantages([5.0]) == [0.0]


# --- a whole group through the engine ---------------------------------------------------------------

PARIS = "Paris is the capital of France."
BERLIN = "Berlin is the capital of Germany."


def _insert(content: str) -> ToolCall:
    return ToolCall("new_memory_insert", {"memory_type": "semantic_memory", "content": content})


class ScriptedPolicy:
    """Replies from a script, in call order (rollouts run one after the other)."""

    name = "scripted"
    view_items: int | None = None

    def __init__(self, script: Sequence[list[ToolCall] | PolicyError]) -> None:
        self.script = list(script)

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> SampledReply:
        calls = self.script.pop(0)
        if isinstance(calls, PolicyError):
            raise calls
        sample = TokenSample(
            prompt_ids=[1, 2], completion_ids=[3, 4], logprobs=[-0.5, -0.25], temperature=1.0
        )
        return SampledReply(
            calls=calls,
            raw_text="",
            usage=Usage(),
            model="scripted",
            latency_s=0.0,
            extras=sample.as_extras(),
        )

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class KindJudge:
    """Semantic writes are valid, anything else is not."""

    async def judge(self, writes: Sequence[tuple[str, str]]) -> list[bool]:
        return [kind == "semantic" for kind, _ in writes]

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("with_judge", [False, True])
async def test_group_rewards_through_the_engine(with_judge: bool) -> None:
    episode = Episode(
        "caps",
        "squad",
        [PARIS, BERLIN],
        [QA("What is the capital of France?", "Paris"), QA("What is the capital of Germany?", "Berlin")],
    )
    script = [
        [_insert(PARIS)],  # rollout 0, chunk 0: ok
        [_insert(BERLIN), _insert(BERLIN)],  # rollout 0, chunk 1: ok + duplicate (skipped)
        [],  # rollout 1, chunk 0: nothing parsed
        [ToolCall("memory_update", {"memory_type": "core_memory", "new_content": BERLIN})],  # ok
    ]
    engine = make_engine(RewardConfig(), Settings(), WordTokenCounter())
    group = await collect_group(
        episode,
        ScriptedPolicy(script),
        engine,
        group_size=2,
        weights=RewardWeights(),
        judge=KindJudge() if with_judge else None,
    )
    # Word counts: each sentence is 7 tokens, input 14. Rollout 0 keeps both sentences as items (r3 = 0)
    # and the extractive reader answers both questions (r1 = 1). Rollout 1 keeps one sentence in core
    # (r3 = 0.5), which the extractive reader does not search (r1 = 0).
    r4 = [1.0, 0.5, 0.0, 0.0] if with_judge else [0.0] * 4
    expected = [
        1 + 1.0 + 0.05 * 0.0 + 0.1 * r4[0],
        1 + 0.5 + 0.05 * 0.0 + 0.1 * r4[1],
        0 + 0.0 + 0.05 * 0.5 + 0.1 * r4[2],
        0 + 1.0 + 0.05 * 0.5 + 0.1 * r4[3],
    ]
    got = [step.reward for step in group.steps]
    assert [step.r1 for step in got] == pytest.approx([1, 1, 0, 0])
    assert [step.r2 for step in got] == pytest.approx([1, 0.5, 0, 1])
    assert [step.r3 for step in got] == pytest.approx([0, 0, 0.5, 0.5])
    assert [step.r4 for step in got] == pytest.approx(r4)
    assert [step.total for step in got] == pytest.approx(expected)
    mean = sum(expected) / 4
    std = math.sqrt(sum((r - mean) ** 2 for r in expected) / 3)
    assert [step.advantage for step in group.steps] == pytest.approx(
        [(r - mean) / (std + 1e-6) for r in expected]
    )
    samples = group.train_samples()
    assert len(samples) == 4 and samples[0].old_logprobs == [-0.5, -0.25]
    assert [s.advantage for s in samples] == [step.advantage for step in group.steps]


LOIRE = (
    "The Loire is the longest river in France. It rises in the Massif Central. Its valley holds many castles. "
    "Vineyards line its banks. The river reaches the Atlantic at Saint-Nazaire."
)


@pytest.mark.parametrize(
    ("reward", "r1"),
    [
        (RewardConfig(), [1, 1]),
        # The answer prompt without items is 164 words: 180 leaves room for one sentence, not the paragraph.
        (RewardConfig(answer_context="budget", answer_context_tokens=180), [0, 1]),
    ],
)
async def test_r1_at_a_budget_below_the_episode_pays_for_compact_items(
    reward: RewardConfig, r1: list[int]
) -> None:
    episode = Episode(
        "loire", "squad", [LOIRE], [QA("Where does the Loire reach the Atlantic?", "Saint-Nazaire")]
    )
    whole, sentences = [_insert(LOIRE)], [_insert(s) for s in split_sentences(LOIRE)]
    engine = make_engine(reward, Settings(), WordTokenCounter())
    assert engine.qa.mode == reward.answer_context  # the service's answer path, as configured
    group = await collect_group(
        episode,
        ScriptedPolicy([whole, sentences]),
        engine,
        group_size=2,
        weights=RewardWeights(),
    )
    assert [step.reward.r1 for step in group.steps] == r1


async def test_rollouts_failed_by_the_infrastructure_are_dropped_not_scored() -> None:
    """A failed policy call drops its rollout: the others' advantages are computed without it (it would
    otherwise score r1 = 0 and hand the policy a negative advantage for a server's outage)."""
    episode = Episode("caps", "squad", [PARIS], [QA("What is the capital of France?", "Paris")])
    script: list[list[ToolCall] | PolicyError] = [
        [_insert(PARIS)],
        PolicyError("rollout endpoint: connection refused"),
        [],
    ]
    engine = make_engine(RewardConfig(), Settings(), WordTokenCounter())
    group = await collect_group(
        episode, ScriptedPolicy(script), engine, group_size=3, weights=RewardWeights()
    )
    assert group.dropped == ["rollout endpoint: connection refused"]
    assert [step.rollout for step in group.steps] == [0, 2]
    totals = [step.reward.total for step in group.steps]
    assert [step.advantage for step in group.steps] == pytest.approx(group_advantages(totals))
    assert infra_drop_rate([group]) == pytest.approx(1 / 3)
    assert mean_rewards([group])["infra_dropped"] == 1


async def test_an_unreachable_answerer_drops_every_rollout() -> None:
    """Real HTTP to a closed port: the answerer's failure is the infrastructure's, not a score of 0."""
    episode = Episode("caps", "squad", [PARIS], [QA("What is the capital of France?", "Paris")])
    reward = RewardConfig(answerer="openai", answerer_url="http://127.0.0.1:9/v1", answerer_model="m")
    engine = make_engine(reward, Settings(), WordTokenCounter())
    try:
        group = await collect_group(
            episode, ScriptedPolicy([[_insert(PARIS)], []]), engine, group_size=2, weights=RewardWeights()
        )
    finally:
        await engine.answerer.aclose()
    assert len(group.dropped) == 2 and all("answering model" in reason for reason in group.dropped)
    assert group.steps == [] and group.train_samples() == []
    assert infra_drop_rate([group]) == 1.0
