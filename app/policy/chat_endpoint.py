"""One OpenAI-compatible chat endpoint (a vLLM replica) as the policy call uses it: `POST /chat/completions`,
its reply whole or as server-sent events, and `GET /models` for health, over one pooled aiohttp session.

Why not the OpenAI SDK's client: the call sends a JSON body this package builds and reads the reply as
JSON, so the SDK's part was its request and response objects (httpx2's URL, header and encoding
handling) and its error types, ~2,200 Python calls per request of the ~2,550 a call cost over the SDK's own
aiohttp transport, half a worker's calls per chunk (docs/results/benchmarks.md (x)). What the SDK did that
this keeps: the bearer token, the JSON body, the server-sent events' `data:` lines up to `[DONE]`, an error
event as an error, HTTP(S)_PROXY from the environment, and errors that say whether a retry can help.
The proxy is looked up once, for the endpoint's URL: aiohttp's `trust_env` looks up the proxy and ~/.netrc on
a thread for every request, two thread hops per policy call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL


class EndpointError(Exception):
    """The endpoint could not be reached, answered an error status or sent an error event. `status` is the
    HTTP status (None for a transport failure); `retryable` says whether the same request may succeed later:
    transport failures, 408, 429 and 5xx."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.status = status
        transient = status is None or status in (408, 429) or status >= 500
        self.retryable = transient if retryable is None else retryable


class ChatEndpoint:
    def __init__(
        self, base_url: str, api_key: str, *, connections: int, timeout_s: float, keepalive_s: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._connections = connections
        self._keepalive_s = keepalive_s
        # Per wait, as the SDK's timeout was: to connect, and between bytes received (a whole reply's
        # first byte comes when it is complete, so this bounds its generation too).
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s
        )
        self._session: aiohttp.ClientSession | None = None
        self._proxy: dict[str, Any] = {}
        try:
            proxy, proxy_auth = get_env_proxy_for_url(URL(self.base_url))
            self._proxy = {"proxy": proxy, "proxy_auth": proxy_auth}
        except LookupError:  # none set for this URL's scheme, or its host is in NO_PROXY
            pass

    def _client(self) -> aiohttp.ClientSession:
        # Made at the first call: a session belongs to the event loop it was made in.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._connections, keepalive_timeout=self._keepalive_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    @asynccontextmanager
    async def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        # No `timeout` argument keeps the session's (aiohttp reads an explicit None as no timeout at all).
        options: dict[str, Any] = (
            self._proxy
            if timeout_s is None
            else {**self._proxy, "timeout": aiohttp.ClientTimeout(total=timeout_s)}
        )
        data = None if body is None else json.dumps(body)
        try:
            async with self._client().request(
                method, self.base_url + path, data=data, headers=self._headers, **options
            ) as response:
                if response.status >= 400:
                    text = (await response.read()).decode(errors="replace")
                    raise EndpointError(f"HTTP {response.status}: {text[:300]}", status=response.status)
                yield response
        except TimeoutError as exc:  # aiohttp's read and connect timeouts included
            raise EndpointError(f"timed out ({type(exc).__name__}: {str(exc)[:200]})") from exc
        except aiohttp.ClientError as exc:
            raise EndpointError(f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    async def complete(self, body: dict[str, Any]) -> Any:
        """The reply's JSON; ValueError when the body is not JSON."""
        async with self._request("POST", "/chat/completions", body) as response:
            return json.loads(await response.read())

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """The reply's events (the body asks for `"stream": true`). Closing the iterator before the end
        (`contextlib.aclosing`) closes the connection, which ends the request on the server."""
        async with self._request("POST", "/chat/completions", body) as response:
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, other fields
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                event = json.loads(data)
                if not isinstance(event, dict):
                    raise ValueError(f"an event that is a JSON {type(event).__name__}, not an object")  # noqa: TRY004 (a bad body, as non-JSON)
                if event.get("error"):
                    raise EndpointError(f"error event: {str(event['error'])[:300]}", retryable=False)
                yield event

    async def models(self, timeout_s: float) -> Any:
        async with self._request("GET", "/models", timeout_s=timeout_s) as response:
            return json.loads(await response.read())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
