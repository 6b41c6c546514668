"""Answer a question from a memory: retrieval → context within budget → answerer → answer + evidence."""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field

from app.memory import MemoryState, TokenCounter
from app.qa.answerers import Answerer
from app.qa.context import ContextMode, assemble_context
from app.retrieval import Retriever, ScoredItem


@dataclass(frozen=True)
class Evidence:
    id: str
    content: str
    score: float


@dataclass(frozen=True)
class AnswerResult:
    question: str
    answer: str
    core: str
    semantic: list[Evidence]
    episodic: list[Evidence]
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0
    k: int = 0  # items per kind actually shown after fitting the budget (the larger of the two)
    context_tokens: int = 0


def _evidence(found: list[ScoredItem]) -> list[Evidence]:
    return [Evidence(s.item.id, s.item.content, s.score) for s in found]


async def answer_question(
    state: MemoryState,
    question: str,
    *,
    retriever: Retriever,
    answerer: Answerer,
    k: int | None,
    budget_tokens: int,
    counter: TokenCounter,
    key: Hashable = None,
    mode: ContextMode = "top-k",
    query: str | None = None,
) -> AnswerResult:
    """`mode`/`k`/`query` as in `assemble_context`; the defaults are the paper's path (SPEC §4)."""
    started = time.perf_counter()
    context = assemble_context(
        state,
        question,
        retriever=retriever,
        k=k,
        budget_tokens=budget_tokens,
        counter=counter,
        key=key,
        mode=mode,
        query=query,
    )
    reply = await answerer.answer(context)
    return AnswerResult(
        question=question,
        answer=reply.text,
        core=context.core,
        semantic=_evidence(context.semantic),
        episodic=_evidence(context.episodic),
        model=reply.model,
        usage=reply.usage,
        latency_s=time.perf_counter() - started,
        k=context.k,
        context_tokens=context.tokens,
    )
