"""Cutting episodes to their first chunks (short CPU runs) drops the questions only the cut part answers."""

from __future__ import annotations

from trainer.episodes import QA, Episode
from trainer.loop import _cut


def test_cut_keeps_answerable_and_non_span_questions() -> None:
    episode = Episode("e", "squad", ["Paris is in France.", "Rome is in Italy."], [
        QA("Where is Paris?", ["france", "FR"]),  # answered by the kept chunk (case-insensitive)
        QA("Where is Rome?", "Italy"),  # only in the cut chunk: dropped
        QA("How many cities?", "two"),  # verbatim nowhere (not a span): kept, as the data set scores it
    ])
    cut = _cut(episode, 1)
    assert cut.chunks == ["Paris is in France."]
    assert [qa.question for qa in cut.questions] == ["Where is Paris?", "How many cities?"]
    assert cut.metadata["questions_cut"] == 1
    assert _cut(episode, 2) is episode and _cut(episode, None) is episode
