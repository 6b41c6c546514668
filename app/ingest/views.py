"""The memories this process's workers last loaded or committed, per session, for the next chunk.

A session's memory changes only through a commit, and every commit bumps the session's version, so
a memory cached under the session row's identity and version is the memory in the database for as
long as both match: the next chunk of that session, in this process, reads nothing. (The identity
includes the row's creation time: a session deleted and recreated under the same id can reach the
same version number with other items.) Entries are never mutated, only replaced.

What is cached is what the policy reads: for a policy that shows recent items (the `openai` backend)
a partial memory of those items, so a cached session costs a few kilobytes whatever its size; for
one that reads the whole memory (`extractive`) the whole memory.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from app.memory import MemoryState
from app.store.sessions import SessionKey, SessionRow

# Items (loaded ones) that a worker process keeps between chunks, over all sessions, LRU: room for
# thousands of partial memories (about ten items each), or a few whole ones.
VIEW_CACHE_ITEMS = 100_000


def _size(state: MemoryState) -> int:
    return 1 + len(state.semantic) + len(state.episodic)


class Views:
    def __init__(self, max_items: int = VIEW_CACHE_ITEMS) -> None:
        self.max_items = max_items
        self._states: OrderedDict[SessionKey, tuple[datetime, MemoryState]] = OrderedDict()
        self._items = 0

    def get(self, row: SessionRow) -> MemoryState | None:
        key = (row.tenant_id, row.id)
        cached = self._states.get(key)
        if cached is None or cached[0] != row.created_at or cached[1].version != row.version:
            return None
        self._states.move_to_end(key)
        return cached[1]

    def put(self, row: SessionRow, state: MemoryState) -> None:
        """Keep `state` as the memory of `row` (whose version it must have); the least recently used
        others go when the items kept pass the bound (the newest entry stays, however large)."""
        key = (row.tenant_id, row.id)
        self.drop(key)
        self._states[key] = (row.created_at, state)
        self._items += _size(state)
        while self._items > self.max_items and len(self._states) > 1:
            _, (_, evicted) = self._states.popitem(last=False)
            self._items -= _size(evicted)

    def drop(self, key: SessionKey) -> None:
        cached = self._states.pop(key, None)
        if cached is not None:
            self._items -= _size(cached[1])
