"""Assemble what the answerer reads, in one of two modes:

- `budget` (the service default): the items of both kinds that share a term with the question (in
  their content or their index-only cues, which are never shown), best
  BM25 score first, added while the whole prompt fits the token budget; an item whose words repeat one
  already taken is left out. Nothing unrelated pads the context, so a small budget holds only what
  matches. Episodic items are shown in time order (their order in memory) under one date line per
  day (`8 May 2023:`), their text without the date it opened with: a date on every item was a tenth
  of the budget. Each item is charged what it adds to the prompt (its text, its number, its line, its
  day's line if it opens one), so the loop fills the budget instead of overfilling it and dropping
  items again.
- `top-k` (SPEC §4, as the paper and the trainer's reward use it): core + the top-k items of each kind,
  k shrunk until the prompt fits the budget.
"""

from __future__ import annotations

import functools
import heapq
import math
import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from app.memory import (
    LIST_KINDS,
    NONE_RETRIEVED,
    Item,
    MemoryKind,
    MemoryState,
    TokenCounter,
    render_answer_context,
)
from app.qa.prompt import answer_messages, prompt_tokens
from app.retrieval import Analyzer, Retriever, ScoredItem, bm25_tokens

ContextMode = Literal["budget", "top-k"]
_MAX_SKIPS = 64  # items that did not fit, in a row, before the budget counts as full
_COST_CACHE_ITEMS = 65_536  # items whose cost is remembered (across sessions and versions)
# The date an episodic item's text opens with, in the forms the service writes: the extractive writer's
# "On 8 May 2023, …" and a transcript's stamp "[8 May 2023] …".
_LEADING_DAY = re.compile(r"^(?:On (\d{1,2} [A-Z][a-z]+ \d{4}),|\[(\d{1,2} [A-Z][a-z]+ \d{4})\])\s+")


@dataclass(frozen=True)
class AnswerContext:
    question: str
    core: str
    semantic: list[ScoredItem]
    episodic: list[ScoredItem]
    k: int  # items per kind shown (the larger of the two)
    tokens: int  # of the whole answer prompt; over the budget only if core + question alone exceed it
    # How informative each question term is in each kind's memory: Lucene's idf, ln(1 + (N − df + 0.5) /
    # (df + 0.5)), always > 0; a term no item holds gets the largest value. The extractive answerer uses it.
    word_weights: dict[MemoryKind, dict[str, float]]
    analyzer: Analyzer  # how the retriever turned text into terms (the answerer matches the same way)
    query: str = ""  # what was searched, when it differs from the question (a task hint left out)
    by_day: bool = False  # episodic items under one date line per day (budget mode), not dated one by one

    def items(self, kind: MemoryKind) -> list[ScoredItem]:
        return self.semantic if kind is MemoryKind.SEMANTIC else self.episodic

    def rendered(self) -> str:
        semantic = [s.item.content for s in self.semantic]
        if not self.by_day:
            return render_answer_context(self.core, semantic, [dated(s.item) for s in self.episodic])
        lines = [day_line(s.item) for s in self.episodic]
        return render_answer_context(
            self.core, semantic, [text for _, text in lines], [day for day, _ in lines]
        )

    def messages(self) -> list[dict[str, str]]:
        return answer_messages(self.rendered(), self.question)


def dated(item: Item) -> str:
    """An episodic item with its date in front, unless its text already names that date."""
    if item.occurred_at is None:
        return item.content
    day = _day(item.occurred_at)
    return item.content if day in item.content else f"[{day}] {item.content}"


def day_line(item: Item) -> tuple[str | None, str]:
    """An episodic item's day and its text without it, for a context that writes one line per day: the
    date its text opens with, else its `occurred_at` (the text as it is), else none."""
    day, text = _leading_day(item.content)
    if day is None and item.occurred_at is not None:
        day = _day(item.occurred_at)
    return day, text


@functools.lru_cache(maxsize=_COST_CACHE_ITEMS)
def _leading_day(content: str) -> tuple[str | None, str]:
    found = _LEADING_DAY.match(content)
    return (None, content) if found is None else (found[1] or found[2], content[found.end() :])


def _day(moment: datetime) -> str:
    return f"{moment.day} {moment:%B %Y}"


def assemble_context(
    state: MemoryState,
    question: str,
    *,
    retriever: Retriever,
    k: int | None,
    budget_tokens: int,
    counter: TokenCounter,
    key: Hashable = None,
    mode: ContextMode = "top-k",
    query: str | None = None,
) -> AnswerContext:
    """`query` is what is searched (default: the question); `k` caps the items per kind (None: no cap,
    budget mode only)."""
    search = query if query is not None else question
    cues = mode == "budget"  # top-k is SPEC §4's search: contents only
    weights = {kind: _word_weights(retriever, state, kind, search, key, cues) for kind in LIST_KINDS}
    draft = AnswerContext(
        question, state.core, [], [], 0, 0, weights, retriever.scorer.analyzer, search if query else ""
    )
    if mode == "budget":
        return _fill_budget(
            replace(draft, by_day=True), state, retriever, search, k, budget_tokens, counter, key
        )
    return _top_k(draft, state, retriever, search, max(k or 0, 0), budget_tokens, counter, key)


def _measured(context: AnswerContext, counter: TokenCounter) -> AnswerContext:
    shown = max(len(context.semantic), len(context.episodic))
    return replace(context, k=shown, tokens=prompt_tokens(context.messages(), counter))


def _top_k(
    draft: AnswerContext,
    state: MemoryState,
    retriever: Retriever,
    search: str,
    k: int,
    budget_tokens: int,
    counter: TokenCounter,
    key: Hashable,
) -> AnswerContext:
    found = retriever.search(state, search, k, LIST_KINDS, key=key)
    semantic, episodic = found[MemoryKind.SEMANTIC], found[MemoryKind.EPISODIC]

    def build(size: int) -> AnswerContext:
        return replace(
            _measured(replace(draft, semantic=semantic[:size], episodic=episodic[:size]), counter), k=size
        )

    full = build(k)
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


_Taken = tuple[int, ScoredItem, MemoryKind]  # position in its kind, the item, its kind


def _fill_budget(
    draft: AnswerContext,
    state: MemoryState,
    retriever: Retriever,
    search: str,
    k: int | None,
    budget_tokens: int,
    counter: TokenCounter,
    key: Hashable,
) -> AnswerContext:
    terms = retriever.query_terms(search)
    # Both kinds' matches, best score first (on a tie semantic before episodic, each kind in its own
    # order), drawn lazily: the loop below stops once the budget is full, so the work is bounded by
    # the budget, not by how many items of a large memory share a word with the question.
    candidates = heapq.merge(
        *(_ranked(retriever, state, terms, kind, key, k) for kind in LIST_KINDS),
        key=lambda candidate: -candidate[1].score,
    )
    used = _measured(draft, counter).tokens
    taken: list[_Taken] = []
    shown = dict.fromkeys(LIST_KINDS, 0)
    days: set[str] = set()
    seen: set[str] = set()
    skips = 0
    for position, scored, kind in candidates:
        day, line = day_line(scored.item) if kind is MemoryKind.EPISODIC else (None, scored.item.content)
        # Counters are plain objects (hashed by identity); the protocol just does not say so.
        text, cost = _cost(counter, scored.item.content, line)  # type: ignore[arg-type]
        if text in seen:
            continue
        cost += _line_cost(counter, shown[kind] + 1)  # type: ignore[arg-type]
        opens_day = day if day is not None and day not in days else None
        if opens_day is not None:
            cost += _day_cost(counter, opens_day)  # type: ignore[arg-type]
        if used + cost > budget_tokens:
            skips += 1
            if skips >= _MAX_SKIPS:
                break
            continue
        skips = 0
        seen.add(text)
        taken.append((position, scored, kind))
        shown[kind] += 1
        if opens_day is not None:
            days.add(opens_day)
        used += cost
    while True:
        context = _measured(_arrange(draft, taken), counter)
        if context.tokens <= budget_tokens or not taken:
            return context
        # The estimate fell short (a "No date:" line between dated runs, tokens merged across a break):
        taken.pop()  # drop the lowest-scored item


@functools.lru_cache(maxsize=_COST_CACHE_ITEMS)
def _cost(counter: TokenCounter, content: str, line: str) -> tuple[str, int]:
    """An item's duplicate key (its words) and the tokens of its line's text as the prompt holds it: after
    its number's space and before a line break (a BPE tokenizer merges the space into the first word,
    " Caroline" one token where "Caroline" is two, and the break with closing punctuation). Cached:
    the same items come back question after question, and this was most of the budget loop's time."""
    return " ".join(bm25_tokens(content)), counter.count(f" {line}\n")


@functools.lru_cache(maxsize=1024)
def _line_cost(counter: TokenCounter, number: int) -> int:
    """What the `number`-th item of a kind adds besides its text: its number (a token per digit, so
    more from the tenth item on); the first one replaces "(none retrieved)" and its line break."""
    tokens = counter.count(f"{number}.")
    return tokens - counter.count(NONE_RETRIEVED + "\n") if number == 1 else tokens


@functools.lru_cache(maxsize=_COST_CACHE_ITEMS)
def _day_cost(counter: TokenCounter, day: str) -> int:
    return counter.count(f"{day}:\n")


def _ranked(
    retriever: Retriever,
    state: MemoryState,
    terms: list[str],
    kind: MemoryKind,
    key: Hashable,
    limit: int | None,
) -> Iterator[_Taken]:
    for position, scored in retriever.matching(state, terms, kind, key, limit=limit, cues=True):
        yield position, scored, kind


def _arrange(draft: AnswerContext, taken: list[_Taken]) -> AnswerContext:
    """Semantic items by score; episodic items in memory order (the order they happened in)."""
    semantic = [scored for _, scored, kind in taken if kind is MemoryKind.SEMANTIC]
    episodic = [
        scored for _, scored, kind in sorted(taken, key=lambda t: t[0]) if kind is MemoryKind.EPISODIC
    ]
    return replace(draft, semantic=semantic, episodic=episodic)


def _word_weights(
    retriever: Retriever, state: MemoryState, kind: MemoryKind, query: str, key: Hashable, cues: bool
) -> dict[str, float]:
    index = retriever.index(state, kind, key, cues=cues).index
    return {
        term: math.log(1 + (index.size - index.doc_freq(term) + 0.5) / (index.doc_freq(term) + 0.5))
        for term in set(retriever.query_terms(query))
    }
