"""Per-source answer scorers (SPEC §5), plain functions shared by the evaluator and the trainer.

Where we differ from upstream's reward code, on purpose:
- substring: any alias of a list answer counts (upstream looked at the first alias only);
- `;`-parts: the prediction is lower-cased too (upstream compared lower-cased parts with the raw
  prediction), and empty parts are ignored.

LoCoMo follows the official evaluation (snap-research/locomo `task_eval/evaluation.py`): commas
removed, lower-cased, punctuation removed, the words a/an/the/and removed, Porter-stemmed (NLTK)
tokens, token F1. Category 1 (multi-hop) answers are lists: prediction and gold are split on commas and
the score is the mean over gold parts of the best F1 against any predicted part. Category 3 keeps the gold
text before the first `;`. Category 5 (adversarial) has no gold answer and is not scored (peers score 1–4).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from nltk.stem import PorterStemmer

Answer = str | int | float | Sequence[str]

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_INTEGER = re.compile(r"[+-]?\d+")
_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_PUNCTUATION = frozenset(string.punctuation)
LOCOMO_SCORED_CATEGORIES = frozenset({1, 2, 3, 4})


def _aliases(answer: Answer) -> list[str]:
    if isinstance(answer, str | int | float):
        return [str(answer)]
    return [str(alias) for alias in answer]


def substring_match(prediction: str, answer: Answer) -> float:
    """SQuAD, HotpotQA, RULER QA: 1 if a gold alias (case-insensitive) occurs in the prediction."""
    text = prediction.lower()
    return 1.0 if any(alias.strip() and alias.strip().lower() in text for alias in _aliases(answer)) else 0.0


def parts_fraction(prediction: str, answer: Answer) -> float:
    """PerLTQA: the fraction of the `;`-separated gold parts found in the prediction (case-insensitive)."""
    parts = [part.strip().lower() for alias in _aliases(answer) for part in alias.split(";")]
    parts = [part for part in parts if part]
    if not parts:
        return 0.0
    text = prediction.lower()
    return sum(part in text for part in parts) / len(parts)


def boxed_label(prediction: str, answer: Answer) -> float:
    """Classification: the first `\\boxed{…}` (or, without one, the whole reply) must be an integer
    equal to the gold label."""
    found = _BOXED.search(prediction)
    label = (found.group(1) if found else prediction).strip().strip("\"'").strip()
    gold = _aliases(answer)[0].strip().strip("\"'").strip()
    if not _INTEGER.fullmatch(label) or not _INTEGER.fullmatch(gold):
        return 0.0
    return 1.0 if int(label) == int(gold) else 0.0


def keywords_fraction(prediction: str, answer: Answer) -> float:
    """BookSum / InfBench-Sum: the fraction of gold keywords (comma-separated, or a list) present in
    the prediction (case-insensitive)."""
    keywords = [word.strip().lower() for alias in _aliases(answer) for word in alias.split(",")]
    keywords = [word for word in keywords if word]
    if not keywords:
        return 0.0
    text = prediction.lower()
    return sum(word in text for word in keywords) / len(keywords)


@lru_cache(maxsize=1)
def _stemmer() -> PorterStemmer:
    return PorterStemmer()


def locomo_normalize(text: str) -> str:
    text = text.replace(",", "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _stems(text: str) -> list[str]:
    stemmer = _stemmer()
    return [stemmer.stem(word) for word in locomo_normalize(text).split()]


def token_f1(prediction: str, gold: str) -> float:
    """LoCoMo's token F1 over normalised, Porter-stemmed words."""
    predicted, expected = _stems(prediction), _stems(gold)
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def multi_answer_f1(prediction: str, gold: str) -> float:
    """LoCoMo category 1: mean over comma-separated gold parts of the best F1 against any predicted part."""
    predicted = [part.strip() for part in prediction.split(",")]
    expected = [part.strip() for part in gold.split(",")]
    return sum(max(token_f1(p, g) for p in predicted) for g in expected) / len(expected)


def locomo_f1(prediction: str, answer: Answer, category: int) -> float:
    if category not in LOCOMO_SCORED_CATEGORIES:
        raise ValueError(f"LoCoMo category {category} is not scored by token F1 (only 1-4 are)")
    gold = _aliases(answer)[0]
    if category == 3:
        gold = gold.split(";")[0].strip()
    return multi_answer_f1(prediction, gold) if category == 1 else token_f1(prediction, gold)


# Data-source names as the Memalpha parquet and our builders spell them; prefixes cover variants
# (`ruler_qa1`, `icl_banking77`, `ttl_train_trec`).
_BY_PREFIX: tuple[tuple[tuple[str, ...], str], ...] = (
    (("squad", "hotpotqa", "ruler"), "substring"),
    (("perltqa",), "parts"),
    (("booksum", "infbench_sum", "infbench-sum"), "keywords"),
    (("trec", "nlu", "banking77", "clinc", "hwu64", "pubmed", "icl", "ttl_train"), "boxed"),
    (("locomo",), "locomo"),
)


class UnknownDataSource(ValueError):
    """No plain scorer for this source (LongMemEval needs an LLM judge; unknown names are errors)."""


def scorer_name(data_source: str) -> str:
    name = data_source.strip().lower()
    for prefixes, scorer in _BY_PREFIX:
        if name.startswith(prefixes):
            return scorer
    raise UnknownDataSource(f"no plain scorer for data source {data_source!r}")


def score(data_source: str, prediction: str, answer: Answer, *, category: int | None = None) -> float:
    """Score one prediction with its source's rule; LoCoMo needs the question's category."""
    match scorer_name(data_source):
        case "substring":
            return substring_match(prediction, answer)
        case "parts":
            return parts_fraction(prediction, answer)
        case "keywords":
            return keywords_fraction(prediction, answer)
        case "boxed":
            return boxed_label(prediction, answer)
        case _:
            if category is None:
                raise ValueError("LoCoMo scoring needs the question's category")
            return locomo_f1(prediction, answer, category)
