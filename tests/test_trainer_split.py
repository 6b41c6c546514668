"""Cutting episodes to their first chunks (short CPU runs) drops the questions only the cut part answers."""

from __future__ import annotations

from shared_data import SQUAD, require

from app.memory import WordTokenCounter
from trainer.config import TrainConfig
from trainer.episodes import QA, Episode
from trainer.loop import _cut, evaluated, split_episodes


def test_cut_keeps_answerable_and_non_span_questions() -> None:
    episode = Episode(
        "e",
        "squad",
        ["Paris is in France.", "Rome is in Italy."],
        [
            QA("Where is Paris?", ["france", "FR"]),  # answered by the kept chunk (case-insensitive)
            QA("Where is Rome?", "Italy"),  # only in the cut chunk: dropped
            QA("How many cities?", "two"),  # verbatim nowhere (not a span): kept, as the data set scores it
        ],
    )
    cut = _cut(episode, 1)
    assert cut.chunks == ["Paris is in France."]
    assert [qa.question for qa in cut.questions] == ["Where is Paris?", "How many cities?"]
    assert cut.metadata["questions_cut"] == 1
    assert _cut(episode, 2) is episode and _cut(episode, None) is episode


def test_squad_paragraph_episodes_are_held_out_by_article() -> None:
    """The experiment's split on the real SQuAD file: single-paragraph episodes, whole articles held out
    (paragraphs of one article share names and facts), none of them in training."""
    config = TrainConfig.model_validate(
        {
            "model": {"source": "tiny", "name": "tiny"},
            "data": {
                "train": ["squad-paragraphs"],
                "eval": ["squad-paragraphs"],
                "data_dir": str(require(SQUAD).parents[1]),
                "eval_episodes": 260,
                "eval_group": "article",
            },
        }
    )
    split = split_episodes(config, WordTokenCounter())
    articles = {name: {e.metadata["article"] for e in part} for name, part in vars(split).items()}
    assert articles["train"] and articles["held_out"] and not articles["train"] & articles["held_out"]
    assert 260 <= len(split.held_out) < 360 and len(split.train) + len(split.held_out) == 1048
    assert all(len(e.chunks) == 1 and e.questions for e in split.train + split.held_out)
    ids = [e.instance_id for e in split.train + split.held_out]
    assert len(set(ids)) == len(ids)
    # A CPU-sized evaluation keeps every held-out article, evenly spaced paragraphs of each.
    subset = evaluated(split.held_out, 10, "article")
    assert len(subset) == 10 * len(articles["held_out"])
    assert {e.metadata["article"] for e in subset} == articles["held_out"]
    subset_ids = [e.instance_id for e in subset]
    assert len(set(subset_ids)) == len(subset) and set(subset_ids) <= {e.instance_id for e in split.held_out}
    assert evaluated(split.held_out, 0, "article") == split.held_out
