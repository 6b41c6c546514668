"""Cutting episodes to their first chunks (short CPU runs) drops the questions only the cut part answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared_data import SQUAD, require

from app.memory import WordTokenCounter, split_text
from trainer.config import TrainConfig, load_config
from trainer.episodes import QA, Episode
from trainer.episodes.squad_paragraphs import runs
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


def _squad_config(train: str, eval_episodes: int) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {"source": "tiny", "name": "tiny"},
            "data": {
                "train": [train],
                "eval": [train],
                "data_dir": str(require(SQUAD).parents[1]),
                "eval_episodes": eval_episodes,
                "eval_group": "article",
            },
        }
    )


@pytest.mark.parametrize(
    ("count", "lengths"), [(0, []), (1, [1]), (4, [4]), (6, [3, 3]), (25, [3] * 7 + [4])]
)
def test_runs_cover_every_item_once_in_near_equal_lengths(count: int, lengths: list[int]) -> None:
    cut = runs(count, 3)
    assert [len(run) for run in cut] == lengths
    assert [index for run in cut for index in run] == list(range(count))


def test_squad_multichunk_episodes_are_runs_of_one_article_held_out_like_paragraphs() -> None:
    """The experiment's config (pre-registration revision 2): consecutive paragraphs of one article, one
    paragraph per chunk (at most the chunk limit), the run's questions; the held-out articles are those of
    revision 1's single-paragraph split, with the registered counts."""
    counter = WordTokenCounter()
    paragraphs = split_episodes(_squad_config("squad-paragraphs", 260), counter)
    experiment = load_config(
        Path(__file__).parents[1] / "trainer/configs/cpu-squad-experiment.toml",
        {"data.data_dir": str(require(SQUAD).parents[1])},
    )
    assert experiment.data.train == experiment.data.eval == ["squad-multichunk"]
    split = split_episodes(experiment, counter)
    held = {e.metadata["article"] for e in split.held_out}
    assert held == {e.metadata["article"] for e in paragraphs.held_out}
    assert not held & {e.metadata["article"] for e in split.train}
    by_paragraph = {
        (e.metadata["article"], e.metadata["paragraph"]): e for e in paragraphs.train + paragraphs.held_out
    }
    seen = []
    for episode in split.train + split.held_out:
        numbers = episode.metadata["paragraphs"]
        assert 2 <= len(numbers) <= 7 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        singles = [by_paragraph[(episode.metadata["article"], number)] for number in numbers]
        assert episode.questions == [qa for single in singles for qa in single.questions]
        # Each paragraph is its own chunk unless longer than the limit, then split by the engine.
        assert episode.chunks == [
            chunk for single in singles for chunk in split_text(single.chunks[0], 256, counter)
        ]
        assert all(counter.count(chunk) <= 256 for chunk in episode.chunks)
        seen += [(episode.metadata["article"], number) for number in numbers]
    assert sorted(seen) == sorted(by_paragraph) and len(set(seen)) == len(seen)
    assert len(split.held_out) == 101 and sum(len(e.questions) for e in split.held_out) == 1328
    subset = evaluated(split.held_out, experiment.run.eval_per_group, "article")
    assert len(subset) == 58 and sum(len(e.chunks) for e in subset) == 181
