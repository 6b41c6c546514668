"""Memory views (policy and answerer), token counting and chunk splitting."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from shared_data import DATA

from app.memory import (
    Applier,
    MemoryLimits,
    MemoryState,
    Operation,
    WordTokenCounter,
    render_answer_context,
    render_policy_memory,
    split_text,
    truncate_at_word,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
COUNTER = WordTokenCounter()
SQUAD = DATA / "squad" / "squad_dev_v1.1_articles_00-23.json"


def filled_state(semantic: int, episodic: int) -> MemoryState:
    state = MemoryState()
    applier = Applier(MemoryLimits(), COUNTER)
    ops = [
        Operation.from_call("new_memory_insert", {"memory_type": "semantic_memory", "content": f"Fact {n}."})
        for n in range(semantic)
    ]
    ops += [
        Operation.from_call("new_memory_insert", {"memory_type": "episodic_memory", "content": f"Event {n}."})
        for n in range(episodic)
    ]
    ops.append(
        Operation.from_call("memory_update", {"memory_type": "core_memory", "new_content": "User is Ana."})
    )
    applier.apply_all(state, ops, now=NOW)
    return state


def test_policy_view_shows_core_and_most_recent_items_with_counts() -> None:
    state = filled_state(semantic=7, episodic=1)
    view = render_policy_memory(state)
    assert "User is Ana." in view
    assert "showing the 5 most recent of 7 items" in view and "showing the 1 most recent of 1 items" in view
    assert "Fact 1." not in view and "Fact 2." in view and "Fact 6." in view
    assert f"[{state.semantic[-1].id}] Fact 6." in view
    assert view.index("Fact 2.") < view.index("Fact 6.")


def test_policy_view_of_empty_memory_and_zero_window() -> None:
    empty = render_policy_memory(MemoryState())
    assert empty.count("(empty)") == 3
    hidden = render_policy_memory(filled_state(3, 3), visible=0)
    assert "Fact" not in hidden and "showing the 0 most recent of 3 items" in hidden


def test_answer_context_has_no_ids_and_numbers_items() -> None:
    text = render_answer_context("Core text.", ["Fact A.", "Fact B."], [])
    assert text.index("Core text.") < text.index("1. Fact A.") < text.index("2. Fact B.")
    assert "(none retrieved)" in text and "[" not in text


def test_answer_context_writes_a_line_per_day_and_numbers_on() -> None:
    text = render_answer_context(
        "", [], ["A.", "B.", "C.", "D."], ["8 May 2023", "8 May 2023", None, "9 May 2023"]
    )
    assert text.endswith("Episodic memory:\n8 May 2023:\n1. A.\n2. B.\nNo date:\n3. C.\n9 May 2023:\n4. D.")
    assert render_answer_context("", [], ["A."], [None]).endswith("Episodic memory:\n1. A.")


def test_word_counter_and_truncation() -> None:
    assert COUNTER.count("Hello, world! It's 5pm.") == 9  # Hello , world ! It ' s 5pm .
    assert truncate_at_word("one two three four", 2, COUNTER) == "one two"
    assert truncate_at_word("short", 10, COUNTER) == "short"


def test_split_respects_limit_and_keeps_all_words() -> None:
    text = "First paragraph. It has two sentences.\n\n" + " ".join(f"w{n}" for n in range(40)) + "."
    chunks = split_text(text, 12, COUNTER)
    assert all(COUNTER.count(chunk) <= 12 for chunk in chunks)
    assert " ".join(chunks).split() == text.split()
    assert chunks[0] == "First paragraph. It has two sentences."  # a paragraph that fits stays whole


def test_split_short_and_empty_input() -> None:
    assert split_text("  Just this.  ", 100, COUNTER) == ["Just this."]
    assert split_text("   ", 100, COUNTER) == []
    with pytest.raises(ValueError):
        split_text("x", 0, COUNTER)


def test_split_real_squad_article_within_limit() -> None:
    if not SQUAD.exists():
        pytest.fail(f"shared data missing at {SQUAD}")
    article = json.loads(SQUAD.read_text())["data"][0]
    text = "\n\n".join(p["context"] for p in article["paragraphs"])
    chunks = split_text(text, 256, COUNTER)
    assert len(chunks) > 3
    assert all(COUNTER.count(chunk) <= 256 for chunk in chunks)
    assert "".join(chunks).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
