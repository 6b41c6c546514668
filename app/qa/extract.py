"""The extractive answerer's reading of a context: no LLM, deterministic.

- Support of a sentence = the summed weight (idf in its kind's memory) of the distinct question terms
  it holds, matched the way the retriever matched them (stemmed, stopwords out), summed exactly
  (`math.fsum`: a plain sum over the set's order, which the string-hash seed sets, broke exact ties by
  its last bit, differently in every process). The best sentence has
  the most support; on a tie the one in the item with the higher BM25 score wins (it holds the terms
  more often), then the shorter sentence (the shortest sufficient one), then the earlier. Sentences that are questions are passed over: they echo
  the question's words without answering it.
- Nothing relevant: when the best sentence holds less than `MIN_COVERAGE` of the question's distinct
  content terms, memory does not hold the answer (one shared word such as "won" is not support).
  Counted without weights: idf means little on a memory of a few items.
- Span: the speaker/date prefix the writer adds is cut off; a "when" question gets the date (the one
  the sentence names, else the item's), from the best sentence that has one when that one has
  support enough.
- Classification (the question asks for `\\boxed{…}`): the label of the best-scored labelled item.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

from app.memory import LIST_KINDS
from app.qa.context import AnswerContext, dated
from app.retrieval import STOPWORDS, Analyzer, compound_parts

NO_INFORMATION = "The memory does not contain this information."
MIN_COVERAGE = 0.3
_ITEM_CACHE = 32_768  # items whose sentences are remembered (across sessions and questions)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(
    rf"\b(?:\d{{1,2}} (?:{_MONTHS})(?: \d{{4}})?|(?:{_MONTHS}) \d{{1,2}}(?:, \d{{4}})?|(?:{_MONTHS}) \d{{4}}|"
    rf"\d{{4}}-\d{{2}}-\d{{2}})\b"
)
_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")
_WHEN = re.compile(
    r"^\s*(?:when\b|what (?:year|date|month|day|time)\b|which (?:year|month|day)\b)", re.IGNORECASE
)
# "On 8 May 2023, Caroline: …", "[8 May 2023] …", "Caroline: …": added by the writer, not part of the fact.
_PREFIX = re.compile(
    r"^(?:\[[^\]]{1,40}\]\s*|On [^,]{1,40},\s*)?(?:[A-Z][\w.'’-]*(?: [A-Z][\w.'’-]*){0,2}:\s+)?"
)
_LABEL = re.compile(r"\blabel\W{0,3}([\w:-]+)\s*$", re.IGNORECASE)


def extract_answer(context: AnswerContext) -> str | None:
    if "\\boxed" in context.question:
        return _label(context)
    return _sentence_answer(context)


def _label(context: AnswerContext) -> str | None:
    labelled = [
        (scored.score, match.group(1))
        for kind in LIST_KINDS
        for scored in context.items(kind)
        for line in scored.item.content.splitlines()
        if (match := _LABEL.search(line))
    ]
    if not labelled:
        return None
    return f"\\boxed{{{max(labelled, key=lambda pair: pair[0])[1]}}}"


def _sentence_answer(context: AnswerContext) -> str | None:
    analyzer = context.analyzer
    # Stopwords count neither way (the paper's plain analyzer keeps them in the query).
    terms = set(analyzer.query_terms(context.query or context.question))
    terms = (terms - STOPWORDS) or terms
    # A "when" question is answered by a dated sentence: the best one with a date (its own or its
    # item's) wins over better-matching undated ones ("Her name is Shadow!" for "When did Maria adopt
    # Shadow?"), as long as it is support enough.
    when = bool(_WHEN.match(context.question))
    best: tuple[tuple[bool, float, float, int, int, int], str, str] | None = None
    best_held = 0
    fallback: tuple[tuple[bool, float, float, int, int, int], str, str] | None = None
    fallback_held = 0
    for kind_order, kind in enumerate(LIST_KINDS):
        weights = context.word_weights.get(kind, {})
        for scored in context.items(kind):
            text = dated(scored.item)
            for sentence in _sentences(analyzer, text):
                held = _held(terms, sentence)
                support = math.fsum(weights.get(term, 0.0) for term in held)
                if support <= 0:
                    continue
                dated_answer = when and _has_date(sentence.text, text)
                order = (
                    dated_answer,
                    support,
                    scored.score,
                    -len(sentence.text.split()),
                    -kind_order,
                    -sentence.position,
                )
                if best is None or order > best[0]:
                    best, best_held = (order, sentence.text, text), len(held)
                if when and (fallback is None or order[1:] > fallback[0][1:]):
                    fallback, fallback_held = (order, sentence.text, text), len(held)
    if best is not None and best_held < MIN_COVERAGE * len(terms) and fallback is not None:
        best, best_held = fallback, fallback_held  # no dated sentence with support enough
    if best is None or best_held < MIN_COVERAGE * len(terms):
        return None
    return _span(context.question, best[1], best[2])


@dataclass(frozen=True)
class _Sentence:
    text: str
    position: int  # among the pieces the item's text splits into
    terms: frozenset[str]  # its distinct terms, analysed as the retriever indexes them
    parts: frozenset[
        str
    ]  # the parts its terms are compounds of (`compound_parts`), if the analyzer matches them


@functools.lru_cache(maxsize=_ITEM_CACHE)
def _sentences(analyzer: Analyzer, text: str) -> tuple[_Sentence, ...]:
    """An item's sentences that may answer (questions left out), with their terms. Cached per item
    text: the same items come back question after question, and splitting, stemming and finding the
    compounds' parts of their words anew for every question was most of the answerer's time."""
    out: list[_Sentence] = []
    for position, piece in enumerate(_SENTENCE_END.split(text)):
        sentence = piece.strip()
        if not sentence or sentence.endswith("?"):
            continue
        terms = frozenset(analyzer.index_terms(sentence))
        parts = (
            frozenset(part for word in terms for part in compound_parts(word))
            if analyzer.compounds
            else frozenset()
        )
        out.append(_Sentence(sentence, position, terms, parts))
    return tuple(out)


def _held(terms: set[str], sentence: _Sentence) -> set[str]:
    """The question terms the sentence has, as the retriever matched them (a compound holds its last
    part when the analyzer matches compounds)."""
    held = terms.intersection(sentence.terms)
    rest = terms - held
    if rest and sentence.parts:
        held |= rest.intersection(sentence.parts)
    return held


def _has_date(sentence: str, item_text: str) -> bool:
    body = _PREFIX.sub("", sentence, count=1)
    return any(_DATE.search(text) or _YEAR.search(text) for text in (body, item_text))


def _span(question: str, sentence: str, item_text: str) -> str:
    if _WHEN.match(question):
        body = _PREFIX.sub("", sentence, count=1)
        for text in (body, item_text):
            match = _DATE.search(text) or _YEAR.search(text)
            if match:
                return match.group()
    return _PREFIX.sub("", sentence, count=1) or sentence
