"""Assemble what the answerer reads: core + the top-k items of each kind for the question, with k
shrunk until the whole prompt fits the token budget."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, replace

from app.memory import LIST_KINDS, MemoryKind, MemoryState, TokenCounter, render_answer_context
from app.qa.prompt import answer_messages, prompt_tokens
from app.retrieval import Retriever, ScoredItem, bm25_tokens


@dataclass(frozen=True)
class AnswerContext:
    question: str
    core: str
    semantic: list[ScoredItem]
    episodic: list[ScoredItem]
    k: int  # items per kind after shrinking
    tokens: int  # of the whole answer prompt; over the budget only if core + question alone exceed it
    # How informative each question word is in each kind's memory: a smoothed idf, ln(1 + (N − df + 0.5) /
    # (df + 0.5)), always > 0 (BM25's own idf goes negative on tiny memories). The extractive answerer uses it.
    word_weights: dict[MemoryKind, dict[str, float]]

    def items(self, kind: MemoryKind) -> list[ScoredItem]:
        return self.semantic if kind is MemoryKind.SEMANTIC else self.episodic

    def rendered(self) -> str:
        return render_answer_context(
            self.core, [s.item.content for s in self.semantic], [s.item.content for s in self.episodic]
        )

    def messages(self) -> list[dict[str, str]]:
        return answer_messages(self.rendered(), self.question)


def assemble_context(
    state: MemoryState,
    question: str,
    *,
    retriever: Retriever,
    k: int,
    budget_tokens: int,
    counter: TokenCounter,
    key: Hashable = None,
) -> AnswerContext:
    found = retriever.search(state, question, max(k, 0), LIST_KINDS, key=key)
    semantic, episodic = found[MemoryKind.SEMANTIC], found[MemoryKind.EPISODIC]
    weights = {kind: _word_weights(retriever, state, kind, question, key) for kind in LIST_KINDS}

    def build(size: int) -> AnswerContext:
        draft = AnswerContext(question, state.core, semantic[:size], episodic[:size], size, 0, weights)
        return replace(draft, tokens=prompt_tokens(draft.messages(), counter))

    full = build(max(k, 0))
    if full.tokens <= budget_tokens:
        return full
    # More items never mean fewer tokens, so the largest k that fits is found by bisection; when not
    # even k = 0 fits (core + question alone exceed the budget), k = 0 is returned as it is.
    best: AnswerContext | None = None
    low, high = 0, full.k - 1
    while low <= high:
        middle = (low + high) // 2
        candidate = build(middle)
        if candidate.tokens <= budget_tokens:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    return best if best is not None else build(0)


def _word_weights(
    retriever: Retriever, state: MemoryState, kind: MemoryKind, question: str, key: Hashable
) -> dict[str, float]:
    index = retriever.index(state, kind, key).index
    return {
        word: math.log(1 + (index.size - df + 0.5) / (df + 0.5))
        for word in set(bm25_tokens(question))
        if (df := index.doc_freq(word)) > 0
    }
