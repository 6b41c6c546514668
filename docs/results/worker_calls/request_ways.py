"""Python calls per policy request, the same chat completion made four ways against the scripted server
(benchmarks.md (s), (u)): the SDK's `chat.completions.create`; the SDK client's `post` of the same body without
the parameter transform, parsed into `ChatCompletion`; the same `post` returning the raw response, parsed
with `json.loads` (what app/policy/openai_backend.py does since (s)), over the SDK's default transport
(httpx2/httpcore2) and over its aiohttp transport (since (u)); `httpx2.AsyncClient.post` alone;
`aiohttp.ClientSession.post` alone (what a call without the SDK's httpx2 request and response objects would cost).
One request at a time, 40 counted after 5 uncounted; the counts include the event loop's calls.

    PYTHONPATH=$PWD .venv/bin/python docs/results/worker_calls/request_ways.py
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import pstats
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx2
import openai
from openai._base_client import make_request_options
from openai.types.chat import ChatCompletion

from tests.scripted_llm import ScriptedLLM

COUNTED, WARM = 40, 5


async def main(llm: ScriptedLLM) -> None:
    client = openai.AsyncOpenAI(base_url=llm.url, api_key="EMPTY", max_retries=0)
    over_aiohttp = openai.AsyncOpenAI(
        base_url=llm.url, api_key="EMPTY", max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    raw = httpx2.AsyncClient()
    session = aiohttp.ClientSession()
    messages = [
        {"role": "system", "content": "x" * 2000},
        {"role": "user", "content": "<new_chunk>hello there</new_chunk>"},
    ]
    body: dict[str, Any] = {
        "model": llm.model,
        "messages": messages,
        "max_tokens": 2048,
        "temperature": 0.0,
        "stop": ["a", "b"],
    }
    extra = {"chat_template_kwargs": {"enable_thinking": False}}
    options = make_request_options(extra_body=extra, security={"bearer_auth": True})

    async def create() -> object:
        return await client.chat.completions.create(**body, extra_body=extra)

    async def post_model() -> object:
        return await client.post("/chat/completions", body=body, options=options, cast_to=ChatCompletion)

    async def post_json() -> object:
        response = await client.post("/chat/completions", body=body, options=options, cast_to=httpx2.Response)
        return json.loads(response.content)

    async def post_json_aiohttp() -> object:
        response = await over_aiohttp.post(
            "/chat/completions", body=body, options=options, cast_to=httpx2.Response
        )
        return json.loads(response.content)

    async def httpx_alone() -> object:
        headers = {"content-type": "application/json", "authorization": "Bearer EMPTY"}
        response = await raw.post(
            f"{llm.url}/chat/completions", content=json.dumps(body | extra), headers=headers
        )
        return response.json()

    async def aiohttp_alone() -> object:
        headers = {"content-type": "application/json", "authorization": "Bearer EMPTY"}
        async with session.post(
            f"{llm.url}/chat/completions", data=json.dumps(body | extra), headers=headers
        ) as response:
            return json.loads(await response.read())

    ways: dict[str, Callable[[], Awaitable[object]]] = {
        "chat.completions.create": create,
        "post, ChatCompletion": post_model,
        "post, json.loads": post_json,
        "post, json.loads, aiohttp": post_json_aiohttp,
        "httpx2 alone": httpx_alone,
        "aiohttp alone": aiohttp_alone,
    }
    for name, way in ways.items():
        for _ in range(WARM):
            await way()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(COUNTED):
            await way()
        profiler.disable()
        calls = pstats.Stats(profiler).total_calls / COUNTED  # type: ignore[attr-defined]
        print(f"{name:24} {calls:8,.0f} calls per request")
    await client.close()
    await over_aiohttp.close()
    await raw.aclose()
    await session.close()


if __name__ == "__main__":
    with ScriptedLLM() as server:
        asyncio.run(main(server))
