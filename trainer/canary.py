"""The publish canary: before `publish` switches the service to a new adapter, K held-out chunks go through
the serving path — the service's own `OpenAIPolicy` (prompt builder, request shape and constraint, parser),
built by the service's composition function from the settings it serves (`GET /policy`'s `serving`, max
calls included, over the publisher's MEMALPHA_* settings: temperature, memory limits) — against the freshly loaded
adapter on one replica, and each reply is applied by the memory engine. Measured per chunk:

- parse errors: the share of chunks whose reply had a parse error or was cut at the token budget (the
  service records both as parse errors; the trainer's evaluation counts the same, `mean_rewards`);
- r2 (SPEC §6, `trainer.rewards.tool_success_reward`): applied calls / parsed calls, the mean over chunks;
- policy errors: chunks whose call failed after its retries (the adapter is not served as it should be).

These are compared with the evaluation the manifest records (`eval_metrics.eval_after`, the held-out
evaluation of the final adapter): the canary fails when a policy call failed, when its parse-error share
exceeds the manifest's by more than the margin, or when its r2 falls below the manifest's by more than the
margin (manifests written before the evaluation recorded `parse_error_rate` are compared on r2 alone,
and the report says so). A manifest without an evaluation fails the canary (there is nothing to compare with): publish it
with `force` (run, report, switch anyway) or without a canary. The defaults of K and the margin, and why,
are the CLI's (`memalpha train publish`, trainer/commands/train.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.backends import memory_limits, openai_policy_config
from app.contracts.policy import PolicyServing
from app.contracts.schemas import CanaryReport
from app.memory import Applier, TokenCounter
from app.policy import OpenAIPolicy
from app.settings import Settings
from app.tokens import make_token_counter
from trainer.episodes import Episode
from trainer.rewards import tool_success_reward
from trainer.runner import StepRecord, write_memory

_TOKENIZER_PREFIX = "tokenizer:"  # app.tokens.HFTokenCounter's name


class CanaryError(RuntimeError):
    """The canary could not run (no canary set, a counter this process cannot rebuild)."""


@dataclass(frozen=True)
class CanaryConfig:
    settings: Settings  # the service's configuration as the publisher sees it (shared MEMALPHA_* settings)
    chunks: int
    margin: float  # how much worse than the manifest's evaluation either measure may be
    force: bool = False  # run and report, but switch whatever it measures
    episodes: Sequence[Episode] | None = None  # the canary set; None: the run's held-out episodes


@dataclass(frozen=True)
class CanaryResult:
    replica: str
    chunks: int
    parse_error_rate: float
    r2: float
    policy_errors: list[str]
    expected: dict[str, float]  # the manifest's values it was compared with
    margin: float
    failures: list[str] = field(default_factory=list)  # why it failed; empty: passed

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        def expected(key: str) -> str:
            return f"{self.expected[key]:.2f}" if key in self.expected else "not recorded"

        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.failures)
        return (
            f"canary on {self.replica}, {self.chunks} chunks: parse errors {self.parse_error_rate:.2f} "
            f"(manifest {expected('parse_error_rate')}), r2 {self.r2:.2f} (manifest {expected('r2')}), "
            f"policy errors {len(self.policy_errors)}, margin {self.margin:.2f}: {verdict}"
        )

    def report(self, *, forced: bool) -> CanaryReport:
        """The result as the service stores it with the switch (`forced`: switched whatever it measured)."""
        return CanaryReport(
            replica=self.replica,
            chunks=self.chunks,
            parse_error_rate=self.parse_error_rate,
            r2=self.r2,
            expected=self.expected,
            margin=self.margin,
            policy_errors=self.policy_errors,
            failures=self.failures,
            passed=self.passed,
            forced=forced,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "chunks": self.chunks,
            "parse_error_rate": self.parse_error_rate,
            "r2": self.r2,
            "policy_errors": self.policy_errors,
            "expected": self.expected,
            "margin": self.margin,
            "passed": self.passed,
            "failures": self.failures,
        }


def recorded_evaluation(manifest: dict[str, Any]) -> dict[str, float]:
    """The manifest's held-out evaluation of the adapter: the values the canary compares (may be empty)."""
    after = (manifest.get("eval_metrics") or {}).get("eval_after") or {}
    return {key: float(after[key]) for key in ("parse_error_rate", "r2") if key in after}


def serving_counter(serving: PolicyServing) -> TokenCounter:
    """The token counter the service serves with, rebuilt from its name (`GET /policy`)."""
    path = serving.token_counter.removeprefix(_TOKENIZER_PREFIX)
    try:
        counter = make_token_counter(path if serving.token_counter.startswith(_TOKENIZER_PREFIX) else None)
    except Exception as error:  # tokenizers raises its own exception types for a missing or bad file
        raise CanaryError(
            f"cannot rebuild the service's token counter {serving.token_counter!r}: {error}"
        ) from error
    if counter.name != serving.token_counter:
        raise CanaryError(f"the service counts tokens with {serving.token_counter!r}, not a known counter")
    return counter


def held_out_episodes(manifest: dict[str, Any], counter: TokenCounter) -> list[Episode]:
    """The run's held-out episodes as its evaluation ran them, rebuilt from the manifest's training config
    (the data must be where the run read it)."""
    from trainer.config import TrainConfig  # the training stack loads only for this default
    from trainer.loop import evaluated, split_episodes

    if not isinstance(manifest.get("config"), dict):
        raise CanaryError("the manifest records no training config to rebuild its held-out episodes from")
    config = TrainConfig.model_validate(manifest["config"])
    held_out = split_episodes(config, counter).held_out
    return evaluated(held_out, config.run.eval_per_group, config.data.eval_group)


def canary_episodes(episodes: Sequence[Episode], chunks: int) -> list[Episode]:
    """`chunks` chunks in all, the leading ones of as many episodes as that spreads over (each episode's
    chunks in order, on its own memory, as the service sees a session)."""
    if chunks <= 0:
        raise CanaryError("the canary needs at least one chunk")
    with_chunks = [episode for episode in episodes if episode.chunks]
    if not with_chunks:
        raise CanaryError("the canary set has no chunks")
    per_episode = math.ceil(chunks / len(with_chunks))
    out: list[Episode] = []
    left = chunks
    for episode in with_chunks:
        take = min(per_episode, left, len(episode.chunks))
        out.append(Episode(episode.instance_id, episode.data_source, episode.chunks[:take], []))
        left -= take
        if not left:
            break
    return out


def judge(
    steps: Sequence[StepRecord], expected: dict[str, float], margin: float, replica: str
) -> CanaryResult:
    parse_error_rate = sum(bool(step.parse_errors) for step in steps) / len(steps)
    r2 = sum(tool_success_reward([result.status for result in step.results]) for step in steps) / len(steps)
    policy_errors = [step.error for step in steps if step.error is not None]
    failures = []
    if policy_errors:
        failures.append(f"{len(policy_errors)} of {len(steps)} policy calls failed: {policy_errors[0]}")
    if not expected:
        failures.append("the manifest records no evaluation to compare with")
    if "parse_error_rate" in expected and parse_error_rate > expected["parse_error_rate"] + margin:
        failures.append(
            f"parse errors {parse_error_rate:.2f} > manifest {expected['parse_error_rate']:.2f} + {margin:.2f}"
        )
    if "r2" in expected and r2 < expected["r2"] - margin:
        failures.append(f"r2 {r2:.2f} < manifest {expected['r2']:.2f} - {margin:.2f}")
    return CanaryResult(
        replica=replica,
        chunks=len(steps),
        parse_error_rate=parse_error_rate,
        r2=r2,
        policy_errors=policy_errors,
        expected=expected,
        margin=margin,
        failures=failures,
    )


async def run_canary(
    config: CanaryConfig, *, manifest: dict[str, Any], model: str, replica: str, serving: PolicyServing
) -> CanaryResult:
    """The canary's chunks through the serving path against `model` on `replica`, judged (see above)."""
    counter = serving_counter(serving)
    source = config.episodes if config.episodes is not None else held_out_episodes(manifest, counter)
    served = config.settings.model_copy(
        update={
            "policy_backend": "openai",
            "policy_url": replica,
            "policy_urls": [],
            "policy_tool_format": serving.tool_format,
            "policy_max_tokens": serving.max_new_tokens,
            "policy_prompt_budget_tokens": serving.prompt_budget_tokens,
            **({} if serving.max_calls is None else {"policy_max_calls": serving.max_calls}),
            "policy_frequency_penalty": serving.frequency_penalty,
            "policy_repeat_stop_chars": serving.repeat_stop_chars,
            "policy_adapters_dir": None,  # just loaded: a 404 here is a failure, not something to heal
        }
    )
    policy = OpenAIPolicy(openai_policy_config(served), counter)
    applier = Applier(memory_limits(served), counter)
    steps: list[StepRecord] = []
    try:
        for episode in canary_episodes(source, config.chunks):
            _, written = await write_memory(episode, policy, applier=applier, counter=counter, model=model)
            steps += written
    finally:
        await policy.aclose()
    return judge(steps, recorded_evaluation(manifest), config.margin, replica)
