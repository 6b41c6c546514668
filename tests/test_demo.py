"""The LoCoMo / text readers and `memalpha demo` end to end with the extractive policy and answerer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import DATA

from app.cli import main
from app.memory import WordTokenCounter
from trainer.corpus import is_locomo_file, load_conversation, load_locomo, pack_lines, read_text_chunks

LOCOMO = DATA / "locomo" / "locomo_dev.json"
COUNTER = WordTokenCounter()


@pytest.fixture(scope="module")
def locomo_file() -> Path:
    if not LOCOMO.is_file():
        pytest.fail(f"shared data missing: {LOCOMO} (tests read ../shared/data)")
    return LOCOMO


def test_locomo_reader_turns_chunks_and_qa(locomo_file: Path) -> None:
    conversations = load_locomo(locomo_file)
    assert [c.sample_id for c in conversations] == ["conv-26", "conv-30", "conv-41", "conv-42", "conv-43"]
    conv = load_conversation(locomo_file, "conv-26")
    assert (conv.speaker_a, conv.speaker_b, conv.session_count, len(conv.turns)) == (
        "Caroline",
        "Melanie",
        19,
        419,
    )
    assert (
        conv.turns[0].line()
        == "[1:56 pm on 8 May, 2023] Caroline: Hey Mel! Good to see you! How have you been?"
    )
    assert [t.session for t in conv.turns] == sorted(t.session for t in conv.turns)  # session 10 after 9
    with_image = next(t for t in conv.turns if t.image_caption)
    assert with_image.line().endswith(f"[shared an image: {with_image.image_caption}]")

    chunks = conv.chunks(512, COUNTER)
    assert all(COUNTER.count(chunk) <= 512 for chunk in chunks)
    assert "\n".join(chunks).split("\n") == [t.line() for t in conv.turns]  # every turn whole, in order
    assert len(chunks) > 1

    categories = {qa.category for qa in conv.qa}
    assert categories == {1, 2, 3, 4, 5}
    adversarial = next(qa for qa in conv.qa if qa.category == 5)
    assert adversarial.answer is None and adversarial.adversarial_answer and not adversarial.scored
    assert next(qa for qa in conv.qa if qa.question == "When did Melanie paint a sunrise?").answer == "2022"

    first3 = conv.first_sessions(3)
    assert first3.session_count == 3 and first3.qa
    assert all(qa.sessions and max(qa.sessions) <= 3 for qa in first3.qa)
    with pytest.raises(KeyError):
        load_conversation(locomo_file, "conv-99")


def test_pack_lines_cuts_only_an_overlong_line() -> None:
    lines = ["one two three", "four five", " ".join(["long"] * 12), "six"]
    assert pack_lines(lines, 5, COUNTER) == [
        "one two three\nfour five",
        "long long long long long",
        "long long long long long",
        "long long",
        "six",
    ]


def test_text_reader_and_format_detection(tmp_path: Path, locomo_file: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("First paragraph about Alice.\n\nSecond paragraph about Bob.\n", encoding="utf-8")
    assert read_text_chunks(text, 6, COUNTER) == [
        "First paragraph about Alice.",
        "Second paragraph about Bob.",
    ]
    assert read_text_chunks(text, 100, COUNTER) == [
        "First paragraph about Alice.\n\nSecond paragraph about Bob."
    ]
    assert is_locomo_file(locomo_file) and not is_locomo_file(text)


def test_demo_extractive_on_a_locomo_conversation(
    locomo_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "summary.json"
    code = main(
        [
            "demo",
            str(locomo_file),
            "--conversation",
            "conv-26",
            "--policy",
            "extractive",
            "--answerer",
            "extractive",
            "--chunk-tokens",
            "512",
            "--ask",
            "What did Caroline research?",
            "--sample-qa",
            "12",
            "--seed",
            "1",
            "--show-items",
            "3",
            "--json-out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert (
        "== core memory ==" in printed
        and "== semantic memory:" in printed
        and "== episodic memory:" in printed
    )
    assert (
        "chunks/s" in printed
        and "Q: What did Caroline research?" in printed
        and "mean F1 over 12 items" in printed
    )

    summary = json.loads(out.read_text())
    assert summary["source"]["conversation"] == "conv-26" and summary["source"]["turns"] == 419
    ingest = summary["ingest"]
    assert ingest["chunks"] > 5 and ingest["failed_chunks"] == 0 and ingest["chunks_per_s"] > 0
    assert ingest["operations"].get("ok", 0) > 0
    memory = summary["memory"]
    assert memory["semantic_items"] + memory["episodic_items"] > 20
    assert 0 < memory["memory_tokens"]
    ask = summary["asks"][0]
    assert ask["answer"] and ask["semantic"] + ask["episodic"]
    qa = summary["qa"]
    assert len(qa["items"]) == 12 and all(item["category"] in (1, 2, 3, 4) for item in qa["items"])
    assert all(0.0 <= item["f1"] <= 1.0 for item in qa["items"])
    assert qa["mean_f1"] == pytest.approx(sum(item["f1"] for item in qa["items"]) / 12)
    assert qa["mean_f1"] > 0  # the extractive answer quotes evidence: some gold words must show up


def test_demo_rejects_qa_sampling_without_locomo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("Alice adopted a beagle named Rex on 2 March 2024.", encoding="utf-8")
    assert (
        main(["demo", str(text), "--policy", "extractive", "--answerer", "extractive", "--sample-qa", "3"])
        == 2
    )
    assert "--sample-qa needs a LoCoMo file" in capsys.readouterr().err
