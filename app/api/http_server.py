"""The HTTP server `memalpha serve` runs: uvicorn's, with a shutdown hook (`DrainingServer`), and its
HTTP/1.1 protocol: uvicorn's httptools protocol with limits
on the request line and headers, and every refusal in the JSON error shape (`{"error": {...}}`) instead
of uvicorn's plain-text 400.

Without it a 64 MB header is buffered whole (stalling the event loop for seconds) and URLs over the
parser's limit get a text body no client of this API can parse."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.api.errors import error_body
from app.api.middleware import request_id_for
from app.context import request_id

log = logging.getLogger(__name__)

# After a refusal the rest of what the client sends is read and dropped (up to this much, for at most
# this long) behind a half-close, so that a client still sending reads the answer instead of a reset.
_DISCARD_BYTES = 64 * 1024 * 1024
_DISCARD_S = 10.0


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown peer"


class _Refused(Exception):
    """Raised inside a parser callback; httptools turns it into a parser error."""


def limited_protocol(max_url_bytes: int, max_head_bytes: int) -> type[HttpToolsProtocol]:
    """A protocol class that answers 414 beyond `max_url_bytes` of URL and 431 beyond `max_head_bytes`
    of request head (request line and headers), counted as the bytes arrive."""

    class LimitedProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head, self._head_bytes, self._completed = True, 0, 0
            self._refusal: tuple[int, str, str, int] | None = None
            self._discard: int | None = None  # bytes still to drop after a refusal

        def data_received(self, data: bytes) -> None:
            if self._discard is not None:
                self._discard -= len(data)
                if self._discard < 0:
                    self.transport.close()
                return
            in_head, completed = self._in_head, self._completed
            super().data_received(data)
            # A read that began and ended inside one request's head counts towards it (one that completed
            # a head or a request also carries bytes of other parts). At most one read past the limit is
            # buffered.
            if in_head and self._in_head and completed == self._completed and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > max_head_bytes:
                    self._refuse_head()
                    self.send_400_response("")

        def _refuse_head(self) -> None:
            if len(getattr(self, "url", b"")) > max_url_bytes:
                self._refusal = (414, "uri_too_long", "the request URL is too long", max_url_bytes)
            else:
                self._refusal = (
                    431,
                    "request_header_fields_too_large",
                    "the request headers are too large",
                    max_head_bytes,
                )

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > max_url_bytes:
                self._refusal = (
                    414,
                    "uri_too_long",
                    "the request URL is too long (send long questions with POST)",
                    max_url_bytes,
                )
                raise _Refused

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head, self._head_bytes = True, 0
            self._completed += 1

        def send_400_response(self, msg: str) -> None:
            status, code, message, limit = self._refusal or (400, "bad_request", "invalid HTTP request", 0)
            # Like every other answer: an id (the caller's, when its header got through), in the header,
            # the body and the log line.
            given = dict(getattr(self, "headers", [])).get(b"x-request-id", b"")
            rid = request_id_for(given.decode("latin-1") if given else None)
            text = f"{message} (limit {limit} bytes)" if limit else message
            body = json.dumps(error_body(code, text, {"limit": limit} if limit else None, rid)).encode()
            bound = request_id.set(rid)
            try:
                log.info("refused a request from %s: %d %s", _peer(self.client), status, code)
            finally:
                request_id.reset(bound)
            reason = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}
            head = [b"HTTP/1.1 %d %s\r\n" % (status, reason[status])]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            head += [
                b"content-type: application/json\r\n",
                b"x-request-id: %s\r\n" % rid.encode(),
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
            self.transport.write(b"".join(head) + body)
            if not self.transport.can_write_eof():
                self.transport.close()
                return
            self.transport.write_eof()
            self._discard = _DISCARD_BYTES
            self.loop.call_later(_DISCARD_S, self.transport.close)

    return LimitedProtocol


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the app the moment shutdown begins (`on_shutdown`: the workers stop
    claiming and waiting ingests answer), before it drains the open connections for at most
    `timeout_graceful_shutdown` and runs the lifespan's shutdown."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()
        await super().shutdown(sockets)
