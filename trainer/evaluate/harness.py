"""Run every method on the same episodes with the same answerer, and collect the episode runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from app.backends import make_answerer
from app.memory import Applier, MemoryLimits, MemoryState, TokenCounter
from app.policy import PolicyBackend, build_messages
from app.qa import Answerer
from app.retrieval import Retriever
from app.settings import Settings
from trainer.episodes import BuildConfig, Episode, build_episodes
from trainer.evaluate.baselines import run_rag_raw, run_stream_baseline
from trainer.evaluate.judge import AnswerJudge
from trainer.evaluate.methods import MethodSpec
from trainer.runner import EpisodeRun, PromptRecorder, QASettings, run_episode


@dataclass(frozen=True)
class JudgeSettings:
    url: str
    model: str


@dataclass(frozen=True)
class EvalConfig:
    datasets: Sequence[str]
    methods: Sequence[MethodSpec]
    build: BuildConfig
    qa: QASettings
    settings: Settings  # policy and answerer endpoints, memory limits
    judge: JudgeSettings | None = None
    record_prompts: bool = False  # keep each step's policy prompt in the run records (large)
    parallel_episodes: int = 1  # episodes of one method in flight at once (an LLM server batches them)


@dataclass
class DatasetRuns:
    dataset: str
    episodes: list[Episode]
    runs: list[EpisodeRun] = field(default_factory=list)


def applier_for(settings: Settings, counter: TokenCounter) -> Applier:
    return Applier(
        MemoryLimits(settings.core_token_limit, settings.max_item_tokens, settings.max_items_per_kind),
        counter,
    )


def _prompt_recorder(spec: MethodSpec, settings: Settings, counter: TokenCounter) -> PromptRecorder:
    fmt = spec.tool_format or settings.policy_tool_format

    def record(state: MemoryState, chunk: str) -> list[dict[str, str]]:
        return build_messages(
            state, chunk, fmt, counter, settings.policy_prompt_budget_tokens, settings.policy_max_tokens
        ).messages

    return record


class Evaluation:
    """Holds the shared answerer, policies and retriever for one evaluation run."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        self.counter = config.build.counter
        self.applier = applier_for(config.settings, self.counter)
        self.answerer: Answerer = make_answerer(config.settings)
        self.policies: dict[str, PolicyBackend] = {
            spec.name: spec.policy(config.settings) for spec in config.methods if spec.kind == "memory"
        }
        self.retriever = Retriever(scorer=config.settings.retrieval_scorer)
        self.judge = (
            AnswerJudge(config.judge.url, config.judge.model, concurrency=config.qa.concurrency)
            if config.judge
            else None
        )

    async def aclose(self) -> None:
        for policy in self.policies.values():
            await policy.aclose()
        await self.answerer.aclose()
        if self.judge is not None:
            await self.judge.aclose()

    async def run_method(self, spec: MethodSpec, episode: Episode, steps: tqdm | None = None) -> EpisodeRun:
        config = self.config
        if spec.kind == "memory":
            record = _prompt_recorder(spec, config.settings, self.counter) if config.record_prompts else None
            run = await run_episode(
                episode,
                self.policies[spec.name],
                method=spec.name,
                applier=self.applier,
                answerer=self.answerer,
                retriever=self.retriever,
                qa=config.qa,
                counter=self.counter,
                record_prompt=record,
                key=(spec.name, episode.instance_id),
                on_step=(lambda _: steps.update()) if steps else None,
            )
        elif spec.kind == "rag-raw":
            run = await run_rag_raw(
                episode, answerer=self.answerer, qa=config.qa, counter=self.counter, retriever=self.retriever
            )
        else:
            run = await run_stream_baseline(
                episode, method=spec.kind, answerer=self.answerer, qa=config.qa, counter=self.counter
            )
        if self.judge is not None:
            await self._judge(run)
        return run

    async def _judge(self, run: EpisodeRun) -> None:
        assert self.judge is not None
        verdicts = await asyncio.gather(
            *(
                self.judge.judge(
                    a.question, a.gold if isinstance(a.gold, str) else " / ".join(a.gold), a.prediction
                )
                for a in run.answers
            )
        )
        for answer, verdict in zip(run.answers, verdicts, strict=True):
            answer.judged = verdict

    async def run(self) -> list[DatasetRuns]:
        config = self.config
        results = [DatasetRuns(name, build_episodes(name, config.build)) for name in config.datasets]
        total = sum(len(result.episodes) for result in results) * len(config.methods)
        chunk_steps = sum(len(episode.chunks) for result in results for episode in result.episodes) * sum(
            spec.kind == "memory" for spec in config.methods
        )
        gate = asyncio.Semaphore(max(config.parallel_episodes, 1))
        with (
            tqdm(total=total, desc="episodes x methods", unit="run") as bar,
            tqdm(total=chunk_steps, desc="policy steps", unit="chunk", leave=False) as steps,
        ):

            async def one(spec: MethodSpec, episode: Episode, dataset: str) -> EpisodeRun:
                async with gate:
                    bar.set_postfix_str(f"{dataset} {episode.instance_id} {spec.name}")
                    run = await self.run_method(spec, episode, steps)
                    bar.update()
                    return run

            for result in results:
                for spec in config.methods:  # one method at a time: its episodes share the server's batch
                    result.runs += await asyncio.gather(
                        *(one(spec, episode, result.dataset) for episode in result.episodes)
                    )
        return results


async def evaluate(config: EvalConfig) -> list[DatasetRuns]:
    evaluation = Evaluation(config)
    try:
        return await evaluation.run()
    finally:
        await evaluation.aclose()


def dataset_label(name: str) -> str:
    """`parquet:/x/y.parquet` → `y`; built-in names stay as they are."""
    return Path(name.split(":", 1)[1]).stem if ":" in name else name
