"""Baselines that store the raw stream instead of writing memory, answered by the same answerer
through the same answer prompt as the memory methods:

- `rag-raw`: BM25 over the raw chunks, as semantic items of an otherwise empty memory, through the
  service's own answer path: top-k shrunk until the prompt fits the same token budget (the paper's
  RAG-Top2 family, with k set by the budget instead of fixed at 2);
- `long-context`: the last N tokens of the stream, N as large as the budget allows for each question;
- `full-context`: the whole stream, when it fits the budget (else the episode is reported as skipped).
Stream contexts keep the chunks in stream order.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

from app.memory import Item, MemoryState, TokenCounter, item_id
from app.qa import AnswerContext, Answerer, answer_messages, assemble_context
from app.qa.prompt import prompt_tokens
from app.retrieval import Retriever
from trainer.episodes import QA, Episode
from trainer.runner import (
    AnswerRecord,
    EpisodeRun,
    QASettings,
    answer_context,
    answer_from_memory,
    gather_limited,
)

_UNLIMITED = 10**12


def raw_memory(chunks: list[str]) -> MemoryState:
    """The raw chunks as semantic items (no policy, no limits: the baseline stores everything)."""
    now = datetime.now(UTC)
    items = [
        Item(id=item_id(n), content=chunk, created_at=now, updated_at=now, source_seq=n)
        for n, chunk in enumerate(chunks)
    ]
    return MemoryState(semantic=items, version=len(items), next_item=len(items))


def tail(chunks: list[str], max_tokens: int, counter: TokenCounter) -> list[str]:
    """The last `max_tokens` tokens of the stream, as chunk pieces in stream order (the oldest one
    cut at its front)."""
    pieces: list[str] = []
    room = max_tokens
    for chunk in reversed(chunks):
        if room <= 0:
            break
        size = counter.count(chunk)
        if size <= room:
            pieces.append(chunk)
            room -= size
            continue
        start = counter.prefix_end(chunk, size - room)
        piece = chunk[start:].strip()
        if piece:
            pieces.append(piece)
        break
    return list(reversed(pieces))


def stream_context(
    question: str, pieces: list[str], *, retriever: Retriever, counter: TokenCounter
) -> AnswerContext:
    """All pieces in stream order, with the word weights the extractive answerer needs."""
    state = raw_memory(pieces)
    context = assemble_context(
        state,
        question,
        retriever=retriever,
        k=len(pieces),
        budget_tokens=_UNLIMITED,
        counter=counter,
        key=("stream", id(state)),
    )
    position = {item.id: n for n, item in enumerate(state.semantic)}
    return dataclasses.replace(context, semantic=sorted(context.semantic, key=lambda s: position[s.item.id]))


def fitted_tail(
    question: str, chunks: list[str], budget_tokens: int, *, retriever: Retriever, counter: TokenCounter
) -> AnswerContext:
    """The longest stream tail whose whole answer prompt fits the budget."""
    overhead = prompt_tokens(answer_messages("", question), counter)
    room = budget_tokens - overhead
    while True:
        context = stream_context(question, tail(chunks, room, counter), retriever=retriever, counter=counter)
        excess = context.tokens - budget_tokens
        if excess <= 0 or room <= 0:
            return context
        room -= excess  # numbering and section headers cost a few tokens per piece


async def run_stream_baseline(
    episode: Episode,
    *,
    method: str,
    answerer: Answerer,
    qa: QASettings,
    counter: TokenCounter,
) -> EpisodeRun:
    """`long-context` or `full-context` on one episode."""
    started = time.perf_counter()
    retriever = Retriever(max_entries=8)
    input_tokens = sum(counter.count(chunk) for chunk in episode.chunks)
    contexts: list[tuple[QA, AnswerContext]] = []
    for item in episode.questions:
        if method == "full-context":
            context = stream_context(item.question, episode.chunks, retriever=retriever, counter=counter)
            if context.tokens > qa.budget_tokens:
                return EpisodeRun(
                    episode.instance_id,
                    episode.data_source,
                    method,
                    input_tokens,
                    input_tokens,
                    [],
                    [],
                    None,
                    0.0,
                    time.perf_counter() - started,
                    skipped=f"the stream needs {context.tokens} prompt tokens; the budget is {qa.budget_tokens}",
                )
        else:
            context = fitted_tail(
                item.question, episode.chunks, qa.budget_tokens, retriever=retriever, counter=counter
            )
        contexts.append((item, context))
    shown = max((sum(counter.count(s.item.content) for s in c.semantic) for _, c in contexts), default=0)
    answers: list[AnswerRecord] = await gather_limited(
        [
            lambda item=item, context=context: answer_context(episode, item, context, answerer)
            for item, context in contexts
        ],
        qa.concurrency,
    )
    return EpisodeRun(
        episode.instance_id,
        episode.data_source,
        method,
        input_tokens,
        input_tokens if method == "full-context" else shown,
        [],
        answers,
        None,
        0.0,
        time.perf_counter() - started,
    )


async def run_rag_raw(
    episode: Episode, *, answerer: Answerer, qa: QASettings, counter: TokenCounter, retriever: Retriever
) -> EpisodeRun:
    started = time.perf_counter()
    state = raw_memory(episode.chunks)
    answers = await answer_from_memory(
        episode,
        state,
        retriever=retriever,
        answerer=answerer,
        qa=qa,
        counter=counter,
        key=("rag-raw", episode.instance_id),
    )
    stored = sum(counter.count(chunk) for chunk in episode.chunks)
    return EpisodeRun(
        episode.instance_id,
        episode.data_source,
        "rag-raw",
        stored,
        stored,
        [],
        answers,
        state,
        0.0,
        time.perf_counter() - started,
    )
