"""The memory diff of a replay (pure): identical text is the same item whatever its id, near-identical
text is a change, the rest is only in one memory, and every item is accounted for exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from app.memory import Item, MemoryState, item_id
from app.replay.diff import diff_memories

NOW = datetime(2023, 5, 8, tzinfo=UTC)


def _state(semantic: list[str], episodic: Sequence[str] = (), core: str = "", start: int = 0) -> MemoryState:
    def items(texts: list[str], offset: int) -> list[Item]:
        return [Item(item_id(offset + n), text, NOW, NOW) for n, text in enumerate(texts)]

    return MemoryState(
        core=core, semantic=items(semantic, start), episodic=items(list(episodic), start + 100)
    )


def test_same_text_under_other_ids_is_the_same_and_a_reworded_fact_is_a_change() -> None:
    live = _state(["Alice lives in Lisbon.", "Alice likes green tea.", "Bob is a nurse."], core="Alice.")
    replay = _state(
        ["Bob is a nurse.", "Alice likes green tea and coffee.", "Carol plays chess."], start=7, core="Alice."
    )
    diff = diff_memories(live, replay)
    assert diff.same == 1 and not diff.core_changed
    (changed,) = diff.changed
    assert (changed.live, changed.replay) == ("Alice likes green tea.", "Alice likes green tea and coffee.")
    assert changed.live_id != changed.replay_id and changed.similarity >= 0.5
    assert [i.content for i in diff.only_live] == ["Alice lives in Lisbon."]
    assert [i.content for i in diff.only_replay] == ["Carol plays chess."]


def test_duplicates_are_counted_not_collapsed() -> None:
    diff = diff_memories(_state(["x y z", "x y z"]), _state(["x y z"]))
    assert diff.same == 1 and [i.content for i in diff.only_live] == ["x y z"]
    assert diff.changed == [] and diff.only_replay == []


texts = st.lists(st.text(alphabet="abc ", min_size=1, max_size=8), max_size=8)


@given(texts, texts, texts, texts)
def test_every_item_is_accounted_for_once(
    live_sem: list[str], live_epi: list[str], rep_sem: list[str], rep_epi: list[str]
) -> None:
    live, replay = _state(live_sem, live_epi), _state(rep_sem, rep_epi, start=3)
    diff = diff_memories(live, replay)
    assert diff.same + len(diff.changed) + len(diff.only_live) == len(live_sem) + len(live_epi)
    assert diff.same + len(diff.changed) + len(diff.only_replay) == len(rep_sem) + len(rep_epi)
    assert diff_memories(live, live).same == len(live_sem) + len(live_epi)
    assert not diff_memories(live, live).changed and not diff_memories(live, live).only_live
