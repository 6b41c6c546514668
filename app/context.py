"""Per-request context carried through logs: the request id (`X-Request-ID`), also stored on the chunks
a request accepted so that the worker's lines for those chunks carry it too."""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("memalpha_request_id", default=None)
