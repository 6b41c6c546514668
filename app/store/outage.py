"""Database outages: which errors mean "the database is away" (not a bug), and one log line when an
outage begins and one when it ends, however many requests and workers run into it in between."""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger(__name__)


# The exception classes that (may) mean the database is away, for handlers that dispatch on type.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, ConnectionError)


def is_unavailable(exc: BaseException) -> bool:
    """Connection refused or lost, server shutting down, SQLite locked or unreadable: the request may
    succeed later (503), it is not a bug (500)."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class OutageLog:
    def __init__(self) -> None:
        self._since: float | None = None
        self._failures = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> bool:
        """Record a failure; True when it was an outage error (logged once per outage, no traceback)."""
        if not is_unavailable(exc):
            return False
        self._failures += 1
        if self._since is None:
            self._since = time.monotonic()
            log.error("database unavailable: %s", _first_line(exc))
        return True

    def reconnected(self) -> None:
        if self._since is not None:
            log.warning(
                "database available again after %.1f s (%d operations failed meanwhile)",
                time.monotonic() - self._since,
                self._failures,
            )
            self._since, self._failures = None, 0


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
