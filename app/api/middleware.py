"""ASGI middleware: request id, request-body guard (size, UTF-8) and the HTTP latency metric."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response
from app.context import request_id
from app.metrics import HTTP_REQUEST_DURATION

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept when it is short and plain (it goes into logs and the chunk log).
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_BODY_METHODS = {"POST", "PUT", "PATCH"}
# A refused body is still read (and dropped) up to this multiple of the limit, so that a client still
# sending reads the 413 instead of a connection reset; beyond it the connection is cut.
_DRAIN_FACTOR = 4


def request_id_for(given: str | None) -> str:
    """The caller's `X-Request-ID` when sane, else a new id."""
    return given if given is not None and _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class RequestId:
    """Every request gets an id — the caller's `X-Request-ID` when sane, else a new one — bound for its
    log lines (a context variable: each request runs in its own task, so it is not reset here, and the
    500 handler outside this middleware still finds it) and returned on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_for(Headers(scope=scope).get(REQUEST_ID_HEADER))
        request_id.set(rid)

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        await self.app(scope, receive, tagged)


class BodyGuard:
    """Rejects a body over `max_bytes` (413) — from Content-Length before keeping any of it, else as soon
    as the stream passes the limit — and a body that is not UTF-8 (400), before any route parses it.
    The accepted body is replayed to the app unchanged."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        too_large = error_response(
            413,
            "payload_too_large",
            f"request body exceeds {self.max_bytes} bytes",
            {"limit": self.max_bytes},
        )
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            if int(declared) <= self.max_bytes * _DRAIN_FACTOR and not await self._drain(receive, 0):
                return
            await too_large(scope, receive, send)
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nothing to answer
            part = message.get("body", b"")
            size += len(part)
            if size > self.max_bytes:
                if message.get("more_body", False) and not await self._drain(receive, size):
                    return
                await too_large(scope, receive, send)
                return
            parts.append(part)
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            invalid = error_response(
                400, "invalid_utf8", f"request body is not valid UTF-8 (byte {exc.start})"
            )
            await invalid(scope, receive, send)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Receive, read: int) -> bool:
        """Read and drop the rest of a refused body (bounded); False when the client left."""
        while read <= self.max_bytes * _DRAIN_FACTOR:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            read += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return True


class HTTPMetrics:
    """Observes `memalpha_http_request_duration_seconds` labelled by the route template
    (`/sessions/{session_id}/ingest`), never the raw path: session ids are unbounded."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes  # to name the route of a request turned away before routing (BodyGuard)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def observe_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe_status)
        finally:
            HTTP_REQUEST_DURATION.labels(scope["method"], self._template(scope), str(status)).observe(
                time.perf_counter() - started
            )

    def _template(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        for route in self.routes:
            if route.matches(scope)[0] is not Match.NONE:
                return str(getattr(route, "path", "unmatched"))
        return "unmatched"
