"""Request bodies parsed with pydantic-core's JSON parser instead of the standard library's.

FastAPI parses a JSON body with `json.loads` on the event loop before validating it; for the largest
ingest request (8 MB of chunk text) that alone held the loop 70–225 ms, while `pydantic_core.from_json`
(Rust) parses it in 1–6 ms into the same objects. A body it refuses (e.g. a lone surrogate escape,
which `json.loads` accepts) goes to `json.loads` as before, so what is accepted and how it is
rejected do not change."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic_core import from_json


class _FastJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = from_json(body)
            except ValueError:
                self._json = json.loads(body)  # the same result or the same JSONDecodeError as before
        return self._json


class FastJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(_FastJSONRequest(request.scope, request.receive))

        return route_handler
