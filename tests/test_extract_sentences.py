"""The extractive answerer's per-item sentence cache: what it keeps of an item's text, and the question
terms a sentence holds, against their definitions (the retriever's matching, `compound_of`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from app.qa.extract import _SENTENCE_END, _held, _sentences
from app.retrieval import Analyzer, compound_of
from app.retrieval.tokens import PLAIN, STEMMED

WORDS = ["bee", "hive", "beehive", "wildhive", "sailboat", "boat", "rowboats", "boats", "the", "queen"]
sentences = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
texts = st.lists(
    st.tuples(sentences, st.sampled_from([". ", "? ", "! ", "\n", "\n\n", " "])), max_size=5
).map(lambda pieces: "".join(sentence + end for sentence, end in pieces))


@given(text=texts, analyzer=st.sampled_from([PLAIN, STEMMED]))
def test_sentences_are_the_non_question_pieces_with_their_terms(text: str, analyzer: Analyzer) -> None:
    expected = [
        (position, piece.strip(), frozenset(analyzer.index_terms(piece.strip())))
        for position, piece in enumerate(_SENTENCE_END.split(text))
        if piece.strip() and not piece.strip().endswith("?")
    ]
    assert [(s.position, s.text, s.terms) for s in _sentences(analyzer, text)] == expected


@given(text=texts, question=sentences, analyzer=st.sampled_from([PLAIN, STEMMED]))
def test_held_terms_are_those_the_retriever_would_match(text: str, question: str, analyzer: Analyzer) -> None:
    terms = set(analyzer.query_terms(question))
    for sentence in _sentences(analyzer, text):
        expected = {
            term
            for term in terms
            if term in sentence.terms
            or (analyzer.compounds and any(compound_of(word, term) for word in sentence.terms))
        }
        assert _held(terms, sentence) == expected
