"""Drive one episode through the service's engine: the policy writes memory chunk by chunk, then every
question is answered from that memory through `app.qa` and scored with the source's scorer.

Backend-agnostic on purpose: the evaluator passes the service's policy backends, the trainer passes its
sampling backend (token ids, log-probs) through the same `PolicyBackend` protocol and pulls its
per-step payload out of each reply with `step_extras`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.errors import Unavailable
from app.memory import LIST_KINDS, Applier, MemoryState, OpResult, TokenCounter
from app.policy.backend import PolicyBackend, PolicyError, PolicyReply
from app.policy.parser import ToolCall
from app.qa import AnswerContext, Answerer, AnswerResult, ContextMode, answer_question
from app.retrieval import Retriever
from trainer.episodes import QA, Episode
from trainer.evaluate.evidence import evidence_recall
from trainer.evaluate.scorers import score

StepExtras = Callable[[PolicyReply], Any]
PromptRecorder = Callable[[MemoryState, str], list[dict[str, str]]]


@dataclass
class StepRecord:
    """One chunk step: what the policy saw and said, and what each call did to memory."""

    index: int
    chunk_tokens: int
    memory_tokens_before: int
    calls: list[ToolCall]
    results: list[OpResult]
    raw_text: str = ""
    parse_errors: list[str] = field(default_factory=list)
    prompt_tokens: int = 0  # as the serving engine reported them (usage), 0 for the extractive writer
    completion_tokens: int = 0
    latency_s: float = 0.0
    visible_items: int = 0
    model: str = ""
    error: str | None = None  # the policy failed for this chunk (after its own retries): nothing written
    messages: list[dict[str, str]] | None = None  # the prompt, when a recorder was given
    extras: Any = None  # backend-specific payload (the trainer's token ids and log-probs)


@dataclass
class AnswerRecord:
    question: str
    gold: str | list[str]
    category: int | None
    prediction: str
    score: float
    evidence_recall: float  # does the context the answerer read contain the gold answer
    context_tokens: int
    k: int
    latency_s: float
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    judged: float | None = None  # an LLM judge's verdict (1 correct, 0 wrong), when a judge is configured
    error: str | None = None  # the answerer failed (after its retries): scored 0, counted in the report


@dataclass
class EpisodeRun:
    instance_id: str
    data_source: str
    method: str
    input_tokens: int
    memory_tokens: int
    steps: list[StepRecord]
    answers: list[AnswerRecord]
    state: MemoryState | None
    write_s: float
    answer_s: float
    skipped: str | None = None  # why the method could not run on this episode (full-context too long)
    policy: str = ""  # the policy backend's name; "" for the baselines (no writer)

    @property
    def infra_error(self) -> str | None:
        """The first failure of the infrastructure (a policy call or an answer that could not be made, after
        their retries), if any: such a run measures the servers, not the policy, and must not be scored."""
        for error in [step.error for step in self.steps] + [answer.error for answer in self.answers]:
            if error is not None:
                return error
        return None

    @property
    def score(self) -> float | None:
        return sum(a.score for a in self.answers) / len(self.answers) if self.answers else None

    @property
    def compression(self) -> float:
        return 1 - self.memory_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def policy_calls(self) -> int:
        """LLM calls of the writer, failed ones included (the extractive writer makes none)."""
        return 0 if self.policy in ("", "extractive") else len(self.steps)

    @property
    def llm_calls(self) -> int:
        return self.policy_calls + sum(1 for a in self.answers if a.model != "extractive")

    @property
    def llm_tokens(self) -> int:
        written = sum(step.prompt_tokens + step.completion_tokens for step in self.steps)
        return written + sum(a.prompt_tokens + a.completion_tokens for a in self.answers)


@dataclass(frozen=True)
class QASettings:
    """How questions are answered; the same for every method of one evaluation."""

    k: int = 20
    budget_tokens: int = 30_000
    concurrency: int = 4  # questions in flight at once (an LLM server batches them)
    # "top-k": SPEC §4 as the paper and the trainer's reward use it; "budget": the service default
    # (`memalpha eval` follows the settings), where k does not cap the items
    mode: ContextMode = "top-k"


def memory_tokens(state: MemoryState, counter: TokenCounter) -> int:
    """Tokens of everything the memory stores: core, item contents and items' index-only cues (stored
    though never shown, so a writer that adds them pays for them in the stored share and compression;
    a policy that writes none, as Memalpha-4B, is counted as before)."""
    items = [text for kind in LIST_KINDS for item in state.items(kind) for text in (item.content, item.cues)]
    return counter.count(state.core) + sum(counter.count(text) for text in items if text)


async def write_memory(
    episode: Episode,
    policy: PolicyBackend,
    *,
    applier: Applier,
    counter: TokenCounter,
    model: str | None = None,
    state: MemoryState | None = None,
    step_extras: StepExtras | None = None,
    record_prompt: PromptRecorder | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> tuple[MemoryState, list[StepRecord]]:
    """One policy call per chunk on the current state; its calls are applied in order (SPEC §3)."""
    state = state if state is not None else MemoryState()
    steps: list[StepRecord] = []
    for index, chunk in enumerate(episode.chunks):
        step = StepRecord(
            index=index,
            chunk_tokens=counter.count(chunk),
            memory_tokens_before=memory_tokens(state, counter),
            calls=[],
            results=[],
            messages=record_prompt(state, chunk) if record_prompt else None,
        )
        started = time.perf_counter()
        try:
            reply = await policy.propose(state, chunk, model=model)
        except PolicyError as error:
            step.error, step.latency_s = str(error), time.perf_counter() - started
        else:
            step.calls = list(reply.calls)
            # seq is 1-based, as in the service's chunk log, so both write the same items.
            step.results = applier.apply_calls(state, reply.calls, now=datetime.now(UTC), seq=index + 1)
            step.raw_text, step.parse_errors = reply.raw_text, list(reply.parse_errors)
            step.prompt_tokens, step.completion_tokens = (
                reply.usage.prompt_tokens,
                reply.usage.completion_tokens,
            )
            step.latency_s, step.visible_items, step.model = reply.latency_s, reply.visible_items, reply.model
            step.extras = step_extras(reply) if step_extras else None
        steps.append(step)
        if on_step:
            on_step(step)
    return state, steps


def record_answer(
    episode: Episode, qa: QA, prediction: str, context_text: str, **fields: Any
) -> AnswerRecord:
    return AnswerRecord(
        question=qa.question,
        gold=qa.answer,
        category=qa.category,
        prediction=prediction,
        score=score(episode.data_source, prediction, qa.answer, category=qa.category),
        evidence_recall=evidence_recall(episode.data_source, context_text, qa.answers, category=qa.category),
        **fields,
    )


def _from_result(episode: Episode, qa: QA, result: AnswerResult) -> AnswerRecord:
    context = "\n".join(
        [result.core, *(e.content for e in result.semantic), *(e.content for e in result.episodic)]
    )
    return record_answer(
        episode,
        qa,
        result.answer,
        context,
        context_tokens=result.context_tokens,
        k=result.k,
        latency_s=result.latency_s,
        model=result.model,
        prompt_tokens=result.usage.get("prompt_tokens", 0),
        completion_tokens=result.usage.get("completion_tokens", 0),
    )


def failed_answer(qa: QA, error: Exception) -> AnswerRecord:
    """One unreachable answer must not end a long evaluation: it scores 0 and the report counts it."""
    return AnswerRecord(
        question=qa.question,
        gold=qa.answer,
        category=qa.category,
        prediction="",
        score=0.0,
        evidence_recall=0.0,
        context_tokens=0,
        k=0,
        latency_s=0.0,
        model="",
        error=str(error),
    )


async def answer_context(
    episode: Episode, qa: QA, context: AnswerContext, answerer: Answerer
) -> AnswerRecord:
    """Answer from a context that was assembled outside retrieval (the long- and full-context baselines)."""
    started = time.perf_counter()
    try:
        reply = await answerer.answer(context)
    except Unavailable as error:
        return failed_answer(qa, error)
    text = "\n".join(
        [
            context.core,
            *(s.item.content for s in context.semantic),
            *(s.item.content for s in context.episodic),
        ]
    )
    return record_answer(
        episode,
        qa,
        reply.text,
        text,
        context_tokens=context.tokens,
        k=context.k,
        latency_s=time.perf_counter() - started,
        model=reply.model,
        prompt_tokens=reply.usage.get("prompt_tokens", 0),
        completion_tokens=reply.usage.get("completion_tokens", 0),
    )


async def gather_limited(
    jobs: Sequence[Callable[[], Awaitable[AnswerRecord]]], limit: int
) -> list[AnswerRecord]:
    """Run the jobs with at most `limit` in flight; results in job order."""
    gate = asyncio.Semaphore(max(limit, 1))

    async def run(job: Callable[[], Awaitable[AnswerRecord]]) -> AnswerRecord:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


async def answer_from_memory(
    episode: Episode,
    state: MemoryState,
    *,
    retriever: Retriever,
    answerer: Answerer,
    qa: QASettings,
    counter: TokenCounter,
    key: Hashable,
) -> list[AnswerRecord]:
    """Every question through the service's own answer path (retrieval, context in `qa.mode` within the
    budget, answerer)."""

    def job(item: QA) -> Callable[[], Awaitable[AnswerRecord]]:
        async def run() -> AnswerRecord:
            try:
                result = await answer_question(
                    state,
                    item.question,
                    retriever=retriever,
                    answerer=answerer,
                    k=qa.k if qa.mode == "top-k" else None,
                    budget_tokens=qa.budget_tokens,
                    counter=counter,
                    key=key,
                    mode=qa.mode,
                )
            except Unavailable as error:
                return failed_answer(item, error)
            return _from_result(episode, item, result)

        return run

    return await gather_limited([job(item) for item in episode.questions], qa.concurrency)


async def run_episode(
    episode: Episode,
    policy: PolicyBackend,
    *,
    method: str,
    applier: Applier,
    answerer: Answerer,
    retriever: Retriever,
    qa: QASettings,
    counter: TokenCounter,
    model: str | None = None,
    key: Hashable = None,
    step_extras: StepExtras | None = None,
    record_prompt: PromptRecorder | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> EpisodeRun:
    """Write memory over all chunks, then answer and score every question. `key` names this run's
    memory in the retriever's cache: concurrent rollouts of one episode need distinct keys."""
    started = time.perf_counter()
    state, steps = await write_memory(
        episode,
        policy,
        applier=applier,
        counter=counter,
        model=model,
        step_extras=step_extras,
        record_prompt=record_prompt,
        on_step=on_step,
    )
    written = time.perf_counter()
    answers = await answer_from_memory(
        episode,
        state,
        retriever=retriever,
        answerer=answerer,
        qa=qa,
        counter=counter,
        key=key if key is not None else (method, episode.instance_id),
    )
    return EpisodeRun(
        instance_id=episode.instance_id,
        data_source=episode.data_source,
        method=method,
        input_tokens=sum(step.chunk_tokens for step in steps),
        memory_tokens=memory_tokens(state, counter),
        steps=steps,
        answers=answers,
        state=state,
        write_s=written - started,
        answer_s=time.perf_counter() - written,
        policy=policy.name,
    )


__all__ = [
    "AnswerRecord",
    "EpisodeRun",
    "QASettings",
    "StepRecord",
    "answer_context",
    "answer_from_memory",
    "gather_limited",
    "memory_tokens",
    "record_answer",
    "run_episode",
    "write_memory",
]
