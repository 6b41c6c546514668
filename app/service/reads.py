"""Reading a session for a use case: its row (404 when missing) and its memory through a small cache."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.memory import MemoryState
from app.store import sessions
from app.store.memory import load_changes, load_state
from app.store.models import Session as SessionRow
from app.store.sessions import SessionKey

# Memory states kept for answering and searching, re-validated against the session's version.
STATE_CACHE_SESSIONS = 256


async def session_row(session: AsyncSession, key: SessionKey, *, for_update: bool = False) -> SessionRow:
    row = await sessions.get_session(session, key, for_update=for_update)
    if row is None:
        raise NotFound(f"session {key[1]!r} not found")
    return row


class StateCache:
    """Sessions' memories by key, valid while the session's creation time and version match. A
    memory cached at an older version of the same session is brought up to date with what was
    written since (`load_changes`), not read again."""

    def __init__(self, max_sessions: int = STATE_CACHE_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self._states: OrderedDict[SessionKey, tuple[datetime, MemoryState]] = OrderedDict()

    def cached(self, key: SessionKey, row: SessionRow) -> MemoryState | None:
        """The memory of `row` if it is cached at the row's version."""
        cached = self._states.get(key)
        if cached is None or cached[0] != row.created_at or cached[1].version != row.version:
            return None
        self._states.move_to_end(key)
        return cached[1]

    async def get(self, session: AsyncSession, key: SessionKey, row: SessionRow) -> MemoryState:
        """The memory of `row`, read in `session` (the transaction `row` was read in) unless cached."""
        current = self.cached(key, row)
        if current is not None:
            return current
        older = self._states.get(key)
        if older is not None and older[0] == row.created_at and older[1].version < row.version:
            state = await load_changes(session, row, older[1])  # the rows written since
        else:
            state = await load_state(session, row)
        self._states[key] = (row.created_at, state)
        self._states.move_to_end(key)
        while len(self._states) > self.max_sessions:
            self._states.popitem(last=False)
        return state

    def forget(self, key: SessionKey) -> None:
        self._states.pop(key, None)
