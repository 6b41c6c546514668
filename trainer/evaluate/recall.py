"""Answerer-independent evidence recall for the budget sweep: did the context put the evidence in
front of the answerer, whatever the answerer then made of it?

- LoCoMo (`gold_turn_recall`): the share of the question's gold evidence turns (its `evidence` dia ids)
  that the context holds. A turn counts as held when one of its sentences (with at least
  `MIN_SENTENCE_TERMS` content words) has at least `SENTENCE_SHARE` of its content words (stemmed,
  stopwords out) inside one context line: a memory item may rewrite "I" to a name or "yesterday" to a
  date, but keeps the words of the fact. `answer_present` gives the old share of the gold answer's
  words only when a gold turn is held: no credit for answer words that occur by chance elsewhere
  (the old metric gave ~0.5 to contexts without any gold turn).
- Other sources: the gold answer occurs in the context (the source's scorer on the context); for
  classification a sample with the gold label is shown.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from app.retrieval.tokens import STOPWORDS, bm25_tokens, stem
from trainer.evaluate.scorers import locomo_normalize, score, scorer_name

SENTENCE_SHARE = 0.7
MIN_SENTENCE_TERMS = 3
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def content_terms(text: str) -> set[str]:
    return {stem(word) for word in bm25_tokens(text) if word not in STOPWORDS}


def _sentences(turn: str) -> list[set[str]]:
    """The turn's sentences as term sets; a turn too short to split counts as one sentence."""
    sets = [
        terms for part in _SENTENCE.split(turn) if len(terms := content_terms(part)) >= MIN_SENTENCE_TERMS
    ]
    return sets or [content_terms(turn)]


def turn_held(turn: str, lines: list[set[str]]) -> bool:
    for sentence in _sentences(turn):
        if sentence and any(len(sentence & line) >= SENTENCE_SHARE * len(sentence) for line in lines):
            return True
    return False


def gold_turn_recall(context: str, turns: list[str]) -> float | None:
    """Share of gold turns held by the context; None when the question lists no evidence turn."""
    if not turns:
        return None
    lines = [content_terms(line) for line in context.splitlines() if line.strip()]
    return sum(turn_held(turn, lines) for turn in turns) / len(turns)


def answer_present(
    data_source: str, context: str, answers: list[str], *, category: int | None, turn_recall: float | None
) -> float:
    kind = scorer_name(data_source)
    if kind == "boxed":
        gold = answers[0].strip()
        return 1.0 if re.search(rf"\blabel\W{{0,3}}{re.escape(gold)}\b", context, re.IGNORECASE) else 0.0
    if kind == "locomo":
        if not turn_recall:
            return 0.0
        gold = answers[0].split(";")[0] if category == 3 else answers[0]
        wanted = {stem(word) for word in locomo_normalize(gold).split()}
        held = {stem(word) for word in locomo_normalize(context).split()}
        return len(wanted & held) / len(wanted) if wanted else 0.0
    return score(data_source, context, answers, category=category)


@lru_cache(maxsize=4)
def locomo_evidence(path: str) -> dict[tuple[str, str], list[str]]:
    """(sample id, question) → the texts of its gold evidence turns, read from a LoCoMo file."""
    with open(Path(path), encoding="utf-8") as source:
        samples = json.load(source)
    evidence: dict[tuple[str, str], list[str]] = {}
    for sample in samples:
        conversation = sample["conversation"]
        texts = {
            turn["dia_id"]: turn.get("text", "")
            for key, turns in conversation.items()
            if key.startswith("session_") and isinstance(turns, list)
            for turn in turns
        }
        for qa in sample.get("qa", []):
            refs = [ref.strip() for ref in qa.get("evidence", []) or [] for ref in ref.split(";")]
            evidence[(sample["sample_id"], qa["question"])] = [texts[ref] for ref in refs if ref in texts]
    return evidence
