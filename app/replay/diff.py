"""Comparing two memories (pure): items matched by identical text first, then by id (changed text)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from app.memory import LIST_KINDS, Item, MemoryState, OpResult, TokenCounter
from app.replay.models import ChangedItem, DiffItem, MemoryDiff, SideStats

_WORD = re.compile(r"\w+")


# A live item and a replay item whose word sets overlap this much are one fact written differently.
SIMILAR = 0.5
# Pairing by similarity compares every unmatched live item with every unmatched replay item of a kind;
# beyond this many comparisons the leftovers are reported as only-in-live / only-in-replay unpaired.
MAX_COMPARISONS = 1_000_000


def diff_memories(live: MemoryState, replay: MemoryState) -> MemoryDiff:
    """Items with identical text are the same; of the rest, the most similar pairs (word-set Jaccard
    ≥ `SIMILAR`, best first) are changed; the remainder is only in one memory. Ids are not compared:
    each memory numbers its items by its own counter."""
    only_live: list[DiffItem] = []
    only_replay: list[DiffItem] = []
    changed: list[ChangedItem] = []
    same = 0
    for kind in LIST_KINDS:
        unmatched = Counter(item.content for item in replay.items(kind))
        rest_live = []
        for item in live.items(kind):
            if unmatched[item.content] > 0:
                unmatched[item.content] -= 1
                same += 1
            else:
                rest_live.append(item)
        rest_replay = []
        for item in replay.items(kind):  # the replay items the text matching did not use up
            if unmatched[item.content] > 0:
                unmatched[item.content] -= 1
                rest_replay.append(item)
        pairs = _similar_pairs(rest_live, rest_replay)
        paired_live = {a.id for a, _, _ in pairs}
        paired_replay = {b.id for _, b, _ in pairs}
        changed += [
            ChangedItem(
                kind=kind.value,
                live_id=a.id,
                replay_id=b.id,
                live=a.content,
                replay=b.content,
                similarity=round(j, 3),
            )
            for a, b, j in pairs
        ]
        only_live += [
            DiffItem(kind=kind.value, id=i.id, content=i.content)
            for i in rest_live
            if i.id not in paired_live
        ]
        only_replay += [
            DiffItem(kind=kind.value, id=i.id, content=i.content)
            for i in rest_replay
            if i.id not in paired_replay
        ]
    return MemoryDiff(
        core_changed=live.core != replay.core,
        live_core=live.core,
        replay_core=replay.core,
        same=same,
        only_live=only_live,
        only_replay=only_replay,
        changed=changed,
    )


def _words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


def _similar_pairs(live: list[Item], replay: list[Item]) -> list[tuple[Item, Item, float]]:
    if len(live) * len(replay) > MAX_COMPARISONS:
        return []
    replay_words = [(item, _words(item.content)) for item in replay]
    candidates = []
    for a in live:
        words = _words(a.content)
        for b, other in replay_words:
            union = len(words | other)
            similarity = len(words & other) / union if union else 0.0
            if similarity >= SIMILAR:
                candidates.append((similarity, a, b))
    candidates.sort(key=lambda c: -c[0])
    used_live: set[str] = set()
    used_replay: set[str] = set()
    pairs = []
    for similarity, a, b in candidates:  # greedy, best first: each item in at most one pair
        if a.id not in used_live and b.id not in used_replay:
            used_live.add(a.id)
            used_replay.add(b.id)
            pairs.append((a, b, similarity))
    return pairs


def side_stats(state: MemoryState, operations: Iterable[tuple[str, str]], counter: TokenCounter) -> SideStats:
    """`operations`: (tool, status) of each policy operation that built `state`."""
    tokens = counter.count(state.core) + sum(
        counter.count(item.content) for kind in LIST_KINDS for item in state.items(kind)
    )
    return SideStats(
        memory_tokens=tokens,
        items={kind.value: len(state.items(kind)) for kind in LIST_KINDS},
        operations=dict(sorted(Counter(f"{tool}/{status}" for tool, status in operations).items())),
    )


def op_keys(results: Iterable[OpResult]) -> list[tuple[str, str]]:
    return [(str(result.tool), result.status) for result in results]
