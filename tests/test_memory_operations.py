"""Every rule and limit of `app.memory`'s operations (ARCHITECTURE §2, SPEC §1–2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.memory import (
    TRUNCATION_MARKER,
    Applier,
    MemoryKind,
    MemoryLimits,
    MemoryState,
    Operation,
    WordTokenCounter,
    item_id,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
COUNTER = WordTokenCounter()


def make_applier(**limits: int) -> Applier:
    return Applier(MemoryLimits(**limits), COUNTER)


def insert(kind: str, content: object) -> Operation:
    return Operation.from_call("new_memory_insert", {"memory_type": kind, "content": content})


def update(kind: str, content: object, memory_id: object = None) -> Operation:
    return Operation.from_call(
        "memory_update", {"memory_type": kind, "new_content": content, "memory_id": memory_id}
    )


def delete(kind: str, memory_id: object = None) -> Operation:
    return Operation.from_call("memory_delete", {"memory_type": kind, "memory_id": memory_id})


def test_insert_appends_with_unique_id_and_bumps_version() -> None:
    state, applier = MemoryState(), make_applier()
    first = applier.apply(
        state, insert("semantic_memory", "Caroline is a counsellor."), now=NOW, source_seq=3
    )
    second = applier.apply(
        state, insert("episodic_memory", "On 8 May 2023 Caroline went to a support group."), now=NOW
    )
    assert (first.status, second.status) == ("ok", "ok")
    assert first.item_id != second.item_id
    assert [i.content for i in state.semantic] == ["Caroline is a counsellor."]
    assert state.semantic[0].source_seq == 3 and state.semantic[0].created_at == NOW
    assert state.episodic[0].id == second.item_id
    assert state.version == 2 and state.next_item == 2


def test_duplicate_insert_is_skipped_per_kind() -> None:
    state, applier = MemoryState(), make_applier()
    first = applier.apply(state, insert("semantic_memory", "Tea is a drink."), now=NOW)
    again = applier.apply(state, insert("semantic_memory", "  Tea is a drink.  "), now=NOW)
    other_kind = applier.apply(state, insert("episodic_memory", "Tea is a drink."), now=NOW)
    assert again.status == "skipped" and again.item_id == first.item_id
    assert other_kind.status == "ok"
    assert len(state.semantic) == 1 and state.version == 2


def test_core_insert_is_an_error_and_changes_nothing() -> None:
    state, applier = MemoryState(), make_applier()
    result = applier.apply(state, insert("core_memory", "User is Bob."), now=NOW)
    assert result.status == "error" and "core" in (result.error or "")
    assert state == MemoryState()


@pytest.mark.parametrize("content", ["", "   ", None, 42, ["a"]])
def test_empty_or_non_text_content_is_an_error(content: object) -> None:
    state, applier = MemoryState(), make_applier()
    assert applier.apply(state, insert("semantic_memory", content), now=NOW).status == "error"
    assert applier.apply(state, update("core_memory", content), now=NOW).status == "error"
    assert state == MemoryState()


def test_unknown_tool_and_memory_type_are_errors() -> None:
    state, applier = MemoryState(), make_applier()
    bad_tool = applier.apply(
        state, Operation.from_call("memory_merge", {"memory_type": "semantic_memory"}), now=NOW
    )
    bad_kind = applier.apply(state, insert("procedural_memory", "x"), now=NOW)
    assert bad_tool.status == "error" and "memory_merge" in (bad_tool.error or "")
    assert bad_kind.status == "error" and bad_kind.memory_type == "procedural_memory"
    assert state == MemoryState()


def test_memory_type_without_suffix_is_accepted() -> None:
    state, applier = MemoryState(), make_applier()
    assert applier.apply(state, insert("Semantic", "Paris is in France."), now=NOW).memory_type == "semantic"
    assert MemoryKind.parse("episodic_memory") is MemoryKind.EPISODIC
    assert MemoryKind.parse(7) is None


def test_update_replaces_content_and_reports_before_after() -> None:
    state, applier = MemoryState(), make_applier()
    created = applier.apply(state, insert("semantic_memory", "Bob likes tea."), now=NOW)
    later = datetime(2027, 1, 1, tzinfo=UTC)
    result = applier.apply(
        state, update("semantic_memory", "Bob likes coffee.", f"[{created.item_id}]"), now=later
    )
    assert result.status == "ok"
    assert (result.before, result.after, result.item_id) == (
        "Bob likes tea.",
        "Bob likes coffee.",
        created.item_id,
    )
    assert state.semantic[0].content == "Bob likes coffee." and state.semantic[0].updated_at == later
    assert state.semantic[0].created_at == NOW


def test_update_and_delete_with_unknown_or_missing_id_are_errors() -> None:
    state, applier = MemoryState(), make_applier()
    applier.apply(state, insert("episodic_memory", "Yesterday Bob ran 5 km."), now=NOW)
    snapshot = state.copy()
    for op in (
        update("episodic_memory", "new", "zzzz"),
        delete("episodic_memory", "zzzz"),
        update("episodic_memory", "new", None),
        delete("semantic_memory", state.episodic[0].id),  # right id, wrong kind
    ):
        assert applier.apply(state, op, now=NOW).status == "error"
    assert state == snapshot


def test_update_to_identical_content_is_skipped() -> None:
    state, applier = MemoryState(), make_applier()
    created = applier.apply(state, insert("semantic_memory", "A fact."), now=NOW)
    assert (
        applier.apply(state, update("semantic_memory", "A fact.", created.item_id), now=NOW).status
        == "skipped"
    )
    applier.apply(state, update("core_memory", "Core."), now=NOW)
    assert applier.apply(state, update("core_memory", "Core."), now=NOW).status == "skipped"
    assert state.version == 2


def test_delete_removes_item_and_ids_are_never_reused() -> None:
    state, applier = MemoryState(), make_applier()
    first = applier.apply(state, insert("semantic_memory", "One."), now=NOW)
    assert applier.apply(state, delete("semantic_memory", first.item_id), now=NOW).before == "One."
    second = applier.apply(state, insert("semantic_memory", "One."), now=NOW)
    assert state.semantic[0].id == second.item_id != first.item_id


def test_core_update_ignores_memory_id_and_delete_clears() -> None:
    state, applier = MemoryState(), make_applier()
    assert applier.apply(state, update("core_memory", "User: Bob, 34.", "ignored"), now=NOW).status == "ok"
    assert state.core == "User: Bob, 34."
    cleared = applier.apply(state, delete("core_memory"), now=NOW)
    assert (cleared.status, cleared.before, state.core) == ("ok", "User: Bob, 34.", "")
    assert applier.apply(state, delete("core_memory"), now=NOW).status == "skipped"


def test_core_over_limit_is_truncated_at_a_word_boundary_with_marker() -> None:
    state, applier = MemoryState(), make_applier(core_tokens=12)
    long_text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron"
    result = applier.apply(state, update("core_memory", long_text), now=NOW)
    assert result.status == "ok" and result.truncated and state.core_truncated
    assert state.core.endswith(TRUNCATION_MARKER)
    kept = state.core[: -len(TRUNCATION_MARKER)]
    assert long_text.startswith(kept) and long_text[len(kept)] == " "
    assert COUNTER.count(state.core) <= 12


def test_item_over_max_length_is_an_error() -> None:
    state, applier = MemoryState(), make_applier(max_item_tokens=5)
    assert applier.apply(state, insert("semantic_memory", "one two three four five"), now=NOW).status == "ok"
    too_long = applier.apply(state, insert("semantic_memory", "one two three four five six"), now=NOW)
    assert too_long.status == "error" and "limit" in (too_long.error or "")
    update_long = applier.apply(
        state, update("semantic_memory", "a b c d e f", state.semantic[0].id), now=NOW
    )
    assert update_long.status == "error" and state.semantic[0].content == "one two three four five"


def test_max_items_per_kind_is_enforced_per_kind() -> None:
    state, applier = MemoryState(), make_applier(max_items_per_kind=2)
    results = applier.apply_all(state, [insert("semantic_memory", f"Fact {n}.") for n in range(3)], now=NOW)
    assert [r.status for r in results] == ["ok", "ok", "error"]
    assert applier.apply(state, insert("episodic_memory", "Event."), now=NOW).status == "ok"


def test_ops_of_one_reply_see_earlier_effects() -> None:
    state, applier = MemoryState(), make_applier()
    first_id = item_id(0)  # the id the first insert gets: a later call in the same reply may use it
    results = applier.apply_all(
        state,
        [
            insert("semantic_memory", "Draft."),
            update("semantic_memory", "Final.", first_id),
            delete("semantic_memory", first_id),
            update("semantic_memory", "Too late.", first_id),
        ],
        now=NOW,
    )
    assert [r.status for r in results] == ["ok", "ok", "ok", "error"]
    assert state.semantic == []


def test_ids_are_short_unique_and_grow() -> None:
    ids = [item_id(n) for n in range(50_000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 4 for i in ids)
    assert len(item_id(36**4)) == 5 and item_id(36**4) != item_id(0)
    with pytest.raises(ValueError):
        item_id(-1)


def test_a_copied_view_label_of_an_existing_item_is_not_stored() -> None:
    # The policy view shows items as `[id] content`; models copy the label into what they write.
    applier, state = make_applier(), MemoryState()
    first = applier.apply(state, insert("semantic_memory", "Ana plays the cello."), now=NOW)
    label = f"[{first.item_id}]"

    again = applier.apply(state, insert("episodic_memory", f"{label} Ana moved to Lyon."), now=NOW)
    assert again.status == "ok" and state.episodic[0].content == "Ana moved to Lyon."

    upper = applier.apply(state, insert("semantic_memory", f"[{first.item_id.upper()}]Ana sails."), now=NOW)
    assert upper.status == "ok" and state.semantic[-1].content == "Ana sails."

    copy = applier.apply(state, insert("semantic_memory", f"{label} Ana plays the cello."), now=NOW)
    assert copy.status == "skipped" and len(state.semantic) == 2  # a re-stored item is a duplicate

    edited = applier.apply(
        state, update("semantic_memory", f"{label} Ana plays the viola.", first.item_id), now=NOW
    )
    assert edited.status == "ok" and state.semantic[0].content == "Ana plays the viola."


def test_brackets_that_name_no_item_are_kept_and_a_bare_label_is_an_error() -> None:
    applier, state = make_applier(), MemoryState()
    first = applier.apply(state, insert("semantic_memory", "[2023] Ana's best year."), now=NOW)
    assert first.status == "ok" and state.semantic[0].content == "[2023] Ana's best year."

    version = state.version
    bare = applier.apply(state, insert("episodic_memory", f"[{first.item_id}]"), now=NOW)
    assert bare.status == "error" and "label" in (bare.error or "")
    assert state.episodic == [] and state.version == version
