"""Evidence recall: does the context the answerer read contain the gold answer? It separates what
memory lost (recall low) from what the answerer failed to read out of it (recall high, score low).

- substring / parts / keyword sources: the source's own scorer applied to the context instead of the
  prediction (the gold answer occurs in the context);
- classification: the context holds a labelled sample with the gold label (`Label: 7`);
- LoCoMo: the fraction of the gold answer's normalised, stemmed words that occur in the context (free-form
  gold answers rarely occur verbatim).
"""

from __future__ import annotations

import re
from functools import lru_cache

from nltk.stem import PorterStemmer

from trainer.evaluate.scorers import locomo_normalize, score, scorer_name


@lru_cache(maxsize=1)
def _stemmer() -> PorterStemmer:
    return PorterStemmer()


def _stem_set(text: str) -> set[str]:
    stemmer = _stemmer()
    return {stemmer.stem(word) for word in locomo_normalize(text).split()}


def evidence_recall(
    data_source: str, context: str, answers: list[str], *, category: int | None = None
) -> float:
    kind = scorer_name(data_source)
    if kind == "boxed":
        gold = answers[0].strip()
        return 1.0 if re.search(rf"\blabel\W{{0,3}}{re.escape(gold)}\b", context, re.IGNORECASE) else 0.0
    if kind == "locomo":
        gold = answers[0].split(";")[0] if category == 3 else answers[0]
        wanted = _stem_set(gold)
        return len(wanted & _stem_set(context)) / len(wanted) if wanted else 0.0
    return score(data_source, context, answers, category=category)
