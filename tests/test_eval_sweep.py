"""The budget sweep's parts: gold-turn recall (no credit without a gold turn), rag-raw passages, paired
bootstrap CIs, loaders that take any file in the set's format, classification queries without the task
hint, and a small real sweep on LoCoMo whose report files are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import DATA, HOTPOTQA, LOCOMO, require

from app.memory import WordTokenCounter
from trainer.episodes import BuildConfig, build_episodes
from trainer.evaluate.recall import answer_present, gold_turn_recall, locomo_evidence
from trainer.evaluate.sweep import bootstrap_ci, common_episodes, main, parse_variants, passages, summarise

COUNTER = WordTokenCounter()
TURN = "I went to the LGBTQ support group yesterday and it was so powerful."


def test_gold_turn_recall_needs_the_turn_and_answer_credit_needs_a_gold_turn() -> None:
    held = "1. On 8 May 2023, Caroline went to the LGBTQ support group on 7 May 2023; it was powerful."
    chance = "1. Melanie said May was busy.\n2. 2023 was a good year for the support of art."
    assert gold_turn_recall(held, [TURN]) == 1.0
    assert gold_turn_recall(chance, [TURN]) == 0.0
    assert gold_turn_recall(held, []) is None  # no evidence listed: left out of the mean
    # The old metric credited answer words found anywhere; now only with a gold turn in context.
    assert answer_present("locomo", chance, ["7 May 2023"], category=2, turn_recall=0.0) == 0.0
    assert answer_present("locomo", held, ["7 May 2023"], category=2, turn_recall=1.0) == 1.0
    assert answer_present(
        "squad", "the answer is Denver Broncos", ["Denver Broncos"], category=None, turn_recall=None
    )


def test_locomo_evidence_maps_questions_to_turn_texts() -> None:
    evidence = locomo_evidence(str(require(LOCOMO)))
    turns = evidence[("conv-26", "When did Caroline go to the LGBTQ support group?")]
    assert len(turns) == 1 and "LGBTQ support group" in turns[0]


def test_passages_pack_lines_within_the_limit() -> None:
    chunks = ["a b c\nd e f g\nh", " ".join(f"w{n}" for n in range(25))]
    out = passages(chunks, 8, COUNTER)
    assert all(COUNTER.count(p) <= 8 for p in out)
    assert " ".join(" ".join(out).split()) == " ".join(" ".join(chunks).split())  # nothing lost or reordered


def test_bootstrap_ci_brackets_the_mean_and_excludes_zero_only_for_a_real_difference() -> None:
    low, high = bootstrap_ci([0.1, 0.3, 0.2, 0.25, 0.15] * 20)
    assert 0 < low < 0.2 < high
    low, high = bootstrap_ci([1.0, -1.0] * 50)
    assert low < 0 < high


def test_loaders_take_a_file_and_tolerate_missing_optional_fields(tmp_path: Path) -> None:
    records = json.loads(require(HOTPOTQA).read_text())[:4]
    for record in records:
        record.pop("_id", None)
    path = tmp_path / "my_hotpot.json"
    path.write_text(json.dumps(records))
    episodes = build_episodes(
        "hotpotqa", BuildConfig(data_dir=tmp_path, file=path, records=2, counter=COUNTER)
    )
    assert len(episodes) == 2 and all(len(e.questions) == 2 for e in episodes)
    assert {q.question for e in episodes for q in e.questions} == {r["question"].strip() for r in records}


def test_classification_questions_search_the_sample_without_the_task_hint() -> None:
    episode = build_episodes(
        "banking77", BuildConfig(data_dir=DATA, labels=3, shots=2, questions=2, counter=COUNTER)
    )[0]
    for qa in episode.questions:
        assert "\\boxed" in qa.question and qa.query and "\\boxed" not in qa.query
        assert qa.question.endswith(f"Sample: {qa.query}")


@pytest.mark.timeout(300)
def test_a_small_locomo_sweep_writes_tables_and_plot(tmp_path: Path) -> None:
    require(LOCOMO)
    out = tmp_path / "locomo.json"
    argv = ["run", "--dataset", "locomo", "--data-dir", str(DATA), "--episodes", "1", "--questions", "12"]
    argv += ["--budgets", "256,1024", "--out", str(out)]
    assert main(argv) == 0
    run = json.loads(out.read_text())
    assert run["variants"] == [
        "memory:lucene:budget",
        "rag-raw:lucene:budget",
        "memory:okapi:budget",
        "rag-raw:okapi:budget",
    ]
    assert len(run["table"]) == 8 and len(run["differences"]) == 4
    for row in run["table"]:
        assert row["questions"] == 12 and row["tokens_read"] <= row["budget"]
        assert 0 <= row["score"] <= 1 and 0 <= row["turn_recall"] <= 1
    assert 0 < run["stored_share"] < 2
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "locomo.png").stat().st_size > 0
    assert "memory:lucene:budget" in (tmp_path / "report" / "sweep.md").read_text()


def test_knowledge_update_episodes_state_old_then_new_values_and_memory_keeps_the_new_one() -> None:
    require(LOCOMO)
    episode = build_episodes("locomo-updates", BuildConfig(data_dir=DATA, episodes=1, counter=COUNTER))[0]
    stream = "\n".join(episode.chunks)
    assert len(episode.questions) == 6 and set(episode.metadata["stale"]) == {
        q.question for q in episode.questions
    }
    for qa in episode.questions:
        old = episode.metadata["stale"][qa.question]
        assert old != qa.answer and stream.index(old) < stream.index(str(qa.answer))
        assert "Caroline:" in stream  # the real conversation surrounds the changes


@pytest.mark.timeout(300)
def test_knowledge_update_sweep_scores_current_and_stale_answers(tmp_path: Path) -> None:
    require(LOCOMO)
    out = tmp_path / "updates.json"
    argv = [
        "run",
        "--dataset",
        "locomo-updates",
        "--data-dir",
        str(DATA),
        "--episodes",
        "1",
        "--budgets",
        "1024",
    ]
    assert main([*argv, "--variants", "memory:lucene:budget,rag-raw:lucene:budget", "--out", str(out)]) == 0
    table = {row["variant"]: row for row in json.loads(out.read_text())["table"]}
    # Memory updates a changed fact in place: its answers are current, never the stale value. The raw
    # stream holds both values, and the control may answer with either: it must not beat memory.
    assert table["memory:lucene:budget"]["stale"] == 0.0
    assert table["memory:lucene:budget"]["current"] >= 0.8
    assert table["memory:lucene:budget"]["current"] >= table["rag-raw:lucene:budget"]["current"]


def test_report_cuts_runs_to_the_episodes_asked_for(tmp_path: Path) -> None:
    """A held-out split is reported from the same run: its summary is recomputed from its own rows."""
    rows = [
        {
            "variant": variant,
            "episode": episode,
            "question": 0,
            "category": 4,
            "budget": 1024,
            "tokens_read": 900,
            "score": score,
            "turn_recall": score,
            "answer_present": score,
            "current": None,
            "stale": None,
        }
        for episode, score in (("conv-a", 1.0), ("conv-b", 0.0))
        for variant in ("memory:lucene:budget", "rag-raw:lucene:budget")
    ]
    path = tmp_path / "locomo.json"
    path.with_suffix(".rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = {
        "label": "after",
        "dataset": "locomo",
        "variants": ["memory:lucene:budget", "rag-raw:lucene:budget"],
        "budgets": [1024],
        "episodes": [
            {"episode": "conv-a", "input_tokens": 100, "memory_tokens": 40, "questions": 1},
            {"episode": "conv-b", "input_tokens": 100, "memory_tokens": 60, "questions": 1},
        ],
        "stored_share": 0.5,
        "passage_tokens": 128,
        "token_counter": "words",
        "elapsed_s": 1.0,
        **summarise(rows, parse_variants("memory:lucene:budget,rag-raw:lucene:budget"), [1024]),
    }
    path.write_text(json.dumps(run))
    assert common_episodes([run], [path])[0]["table"][0]["score"] == 0.5
    (held_out,) = common_episodes([run], [path], {"conv-a"})
    assert [e["episode"] for e in held_out["episodes"]] == ["conv-a"]
    assert held_out["stored_share"] == 0.4
    assert held_out["table"][0]["questions"] == 1 and held_out["table"][0]["score"] == 1.0
    assert main(["report", str(path), "--episodes", "conv-b", "--out", str(tmp_path / "b")]) == 0
    assert "stored memory = 0.600" in (tmp_path / "b" / "sweep.md").read_text()
