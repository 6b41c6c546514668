"""Episode builders on the real shared data (small sizes), the Memalpha file format and the registry."""

from __future__ import annotations

import ast
import itertools
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from shared_data import DATA, LOCOMO, SQUAD, require

from app.memory import WordTokenCounter
from trainer.episodes import QA, BuildConfig, Episode, build_episodes, load_episodes, save_episodes
from trainer.episodes.packing import pack_units

COUNTER = WordTokenCounter()


@pytest.fixture(scope="module", autouse=True)
def _shared_data() -> None:
    require(LOCOMO)
    require(SQUAD)


def config(**sizes: object) -> BuildConfig:
    return BuildConfig(data_dir=DATA, counter=COUNTER, **sizes)  # type: ignore[arg-type]


def test_squad_mixes_articles_and_keeps_their_questions() -> None:
    episodes = build_episodes(
        "squad", config(episodes=2, articles=2, paragraphs=4, questions=6, chunk_tokens=300)
    )
    assert [e.instance_id for e in episodes] == ["squad-000", "squad-001"]
    articles = json.loads((DATA / "squad" / "squad_dev_v1.1_articles_00-23.json").read_text())["data"]
    by_title = {article["title"]: article for article in articles}
    for episode in episodes:
        assert episode.data_source == "squad"
        assert len(set(episode.metadata["articles"])) == 2
        stream = "\n\n".join(episode.chunks)
        assert all(COUNTER.count(chunk) <= 300 for chunk in episode.chunks)
        # Every included paragraph is in the stream once, prefixed by its article's title.
        for title in episode.metadata["articles"]:
            for paragraph in by_title[title]["paragraphs"][:4]:
                assert stream.count(paragraph["context"].strip()) == 1
        assert len(episode.questions) == 6
        for qa in episode.questions:
            assert isinstance(qa.answer, list) and qa.answer
            assert any(alias in stream for alias in qa.answer)


def test_squad_stream_is_shuffled_across_articles_and_seeded() -> None:
    first = build_episodes("squad", config(episodes=1, articles=3, paragraphs=6, seed=1))[0]
    again = build_episodes("squad", config(episodes=1, articles=3, paragraphs=6, seed=1))[0]
    other = build_episodes("squad", config(episodes=1, articles=3, paragraphs=6, seed=2))[0]
    assert first == again
    assert first.chunks != other.chunks
    titles = [paragraph.split(":", 1)[0] for chunk in first.chunks for paragraph in chunk.split("\n\n")]
    switches = sum(a != b for a, b in itertools.pairwise(titles))
    assert switches >= 3  # the articles are interleaved, not concatenated (2 switches at most)


def test_hotpotqa_stream_holds_each_questions_supporting_paragraphs() -> None:
    episodes = build_episodes("hotpotqa", config(episodes=2, records=3, chunk_tokens=400))
    records = {
        r["_id"]: r
        for r in json.loads((DATA / "hotpotqa" / "hotpot_dev_distractor_first50.json").read_text())
    }
    assert len(episodes) == 2
    for episode in episodes:
        stream = "\n\n".join(episode.chunks)
        assert all(COUNTER.count(chunk) <= 400 for chunk in episode.chunks)
        assert len(episode.questions) == 3
        for record_id in episode.metadata["record_ids"]:
            facts = records[record_id]["supporting_facts"]
            for title, _ in ast.literal_eval(facts) if isinstance(facts, str) else facts:
                assert f"{title}: " in stream
        assert {qa.question for qa in episode.questions} == {
            records[r]["question"].strip() for r in episode.metadata["record_ids"]
        }


def test_locomo_conversation_is_one_dated_episode_with_scored_categories() -> None:
    episodes = build_episodes("locomo", config(episodes=2, sessions=2, questions=5, chunk_tokens=256))
    assert [e.instance_id for e in episodes] == ["conv-26", "conv-30"]
    for episode in episodes:
        assert episode.data_source == "locomo"
        lines = [line for chunk in episode.chunks for line in chunk.split("\n")]
        assert all(re.match(r"^\[[^\]]+\] \w+: ", line) for line in lines)
        assert all(COUNTER.count(chunk) <= 256 for chunk in episode.chunks)
        assert 0 < len(episode.questions) <= 5
        assert all(qa.category in {1, 2, 3, 4} and isinstance(qa.answer, str) for qa in episode.questions)


@pytest.mark.parametrize("name", ["banking77", "clinc150", "hwu64"])
def test_intent_sets_stream_labelled_samples_and_ask_held_out_ones(name: str) -> None:
    episode = build_episodes(name, config(episodes=1, labels=4, shots=3, questions=8))[0]
    lines = [line for chunk in episode.chunks for line in chunk.split("\n")]
    assert len(lines) == 12
    shown = []
    for line in lines:
        found = re.fullmatch(r"Sample: (.+); Label: (\d+)", line)
        assert found, line
        shown.append(found.group(1))
    label_map = episode.metadata["label_map"]
    assert sorted(label_map.values()) == [0, 1, 2, 3]
    assert len(episode.questions) == 8
    for qa in episode.questions:
        assert "\\boxed{label}" in qa.question
        assert int(qa.answer) in label_map.values()  # type: ignore[arg-type]
        assert qa.question.rsplit("Sample: ", 1)[1] not in shown


def test_trec_coarse_and_fine_label_sets() -> None:
    coarse = build_episodes("trec", config(episodes=2, shots=2, questions=5))
    fine = build_episodes("trec-fine", config(episodes=1, labels=10, shots=1))[0]
    assert sorted(coarse[0].metadata["label_map"]) == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert coarse[0].data_source == "trec_coarse" and fine.data_source == "trec_fine"
    assert coarse[0].metadata["label_map"] != coarse[1].metadata["label_map"]  # a label map per episode
    assert all(":" in label for label in fine.metadata["label_map"])
    assert all(COUNTER.count(chunk) <= 1024 for e in coarse for chunk in e.chunks)


def test_pack_units_keeps_order_and_splits_only_oversized_units() -> None:
    units = ["alpha beta gamma", "delta epsilon", " ".join(f"w{i}." for i in range(30)), "zeta"]
    chunks = pack_units(units, 10, COUNTER, separator="\n")
    assert all(COUNTER.count(chunk) <= 10 for chunk in chunks)
    assert chunks[0] == "alpha beta gamma\ndelta epsilon"
    assert chunks[-1] == "zeta"
    assert " ".join(chunks[1:-1]).split() == units[2].split()


def _sample() -> list[Episode]:
    return [
        Episode("a", "squad", ["one", "two"], [QA("q?", ["x", "y"]), QA("r?", "z")], {"k": [1]}),
        Episode("b", "locomo", ["three"], [QA("s?", "w", category=2)], {}),
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_episode_files_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"episodes{suffix}"
    save_episodes(_sample(), path)
    assert load_episodes(path) == _sample()


def test_parquet_has_the_memalpha_columns(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    save_episodes(_sample(), path)
    table = pq.read_table(path)
    assert table.column_names == [
        "instance_id",
        "prompt",
        "chunks",
        "questions_and_answers",
        "data_source",
        "metadata",
        "num_chunks",
        "num_questions",
    ]
    row = table.to_pylist()[0]
    assert json.loads(row["chunks"]) == ["one", "two"]
    assert json.loads(row["questions_and_answers"])[0] == {"question": "q?", "answer": ["x", "y"]}
    assert (row["num_chunks"], row["num_questions"]) == (2, 2)


def test_registry_reads_files_with_limits(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    save_episodes(_sample(), path)
    episodes = build_episodes(f"parquet:{path}", config(episodes=1, questions=1))
    assert [e.instance_id for e in episodes] == ["a"]
    assert len(episodes[0].questions) == 1
    with pytest.raises(ValueError, match="unknown data set"):
        build_episodes("nope", config())
