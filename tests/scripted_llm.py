"""A scripted OpenAI-compatible chat server for tests and benchmarks: real HTTP on 127.0.0.1 (uvicorn
in a thread of its own), each `/v1/chat/completions` request answered by the next behaviour of a
script, then by a default behaviour.

Behaviours: `Echo()` (200: one alpha-format call inserting the request's `<new_chunk>` text as a
semantic item), `JsonMemory()` (200: `{"memory": [{"text": <the chunk>}]}`, the reply shape of Mem0's
extraction call), `Text(content)` (200 with that reply text), `Status(code)` (an HTTP error),
`Garbage()` (200 whose body is not JSON), `Delay(seconds, then)` (answer late). The chunk is the
last `<new_chunk>…</new_chunk>` of the last user message. A `stream: true` request gets the reply as
server-sent events, a few characters per chunk (`Recorded.streamed` counts those sent before the reply ended
or the client closed the stream).

`/v1/models` lists the server's model and the LoRA adapters loaded through `/v1/load_lora_adapter` (vLLM's
runtime endpoint); with `strict_models=True` a completion for any other model gets vLLM's 404, as a
restarted vLLM answers for an adapter it forgot. `host`/`port` choose the address (several servers on one
port and different loopback addresses stand for the pods behind one DNS name).

`/v1/embeddings` answers at once with deterministic vectors (`EMBEDDING_DIMS` floats: hashed bag of
words, unit length), so a peer library can use the server for its embedder too (`bench/mem0_overhead.py`).

    with ScriptedLLM() as llm:
        llm.script(Status(500), Status(500))    # the next two requests fail, later ones echo
        settings = Settings(policy_backend="openai", policy_url=llm.url, policy_model=llm.model, ...)
        ...
        llm.requests                            # what arrived: times, chunk text, behaviour used
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_CHUNK = re.compile(r"<new_chunk>\s*(.*?)\s*</new_chunk>", re.DOTALL)


def new_chunk(user: str) -> str:
    """The chunk a request is about: the last tagged one. From the last opening tag on, because a prompt
    may quote earlier chunks cut short (Mem0's "Last k Messages" cuts each at ~300 characters, closing tag
    and all): from the first unclosed one to the new one's end would be many chunks in one."""
    start = user.rfind("<new_chunk>")
    found = _CHUNK.match(user, start) if start >= 0 else None
    return found.group(1) if found else ""


@dataclass(frozen=True)
class Echo:
    def content(self, chunk: str) -> str:
        args = json.dumps({"memory_type": "semantic_memory", "content": chunk}, ensure_ascii=False)
        return f"✿FUNCTION✿: new_memory_insert\n✿ARGS✿: {args}"


@dataclass(frozen=True)
class JsonMemory:
    def content(self, chunk: str) -> str:
        return json.dumps({"memory": [{"text": chunk}]}, ensure_ascii=False)


@dataclass(frozen=True)
class Text:
    text: str

    def content(self, chunk: str) -> str:
        return self.text


@dataclass(frozen=True)
class Status:
    code: int
    message: str = "scripted failure"


@dataclass(frozen=True)
class Garbage:
    body: str = "<html>definitely not a chat completion"


@dataclass(frozen=True)
class Delay:
    """Answer after `seconds`; with `spread`, after `seconds × (1 ± spread)`, uniform, drawn from a hash of
    the chunk (as an LLM's latency varies with the reply's length, and the same chunks get the same
    latencies in every run, so runs of two trees compare chunk for chunk)."""

    seconds: float
    then: Behaviour = field(default_factory=Echo)
    spread: float = 0.0

    def latency(self, chunk: str) -> float:
        if not self.spread:
            return self.seconds
        draw = int.from_bytes(hashlib.blake2b(chunk.encode(), digest_size=8).digest(), "big") / 2**64
        return self.seconds * (1 + self.spread * (2 * draw - 1))


Behaviour = Echo | JsonMemory | Text | Status | Garbage | Delay

EMBEDDING_DIMS = 1536  # OpenAI's text-embedding-3-small, Mem0's default


STREAM_PIECE_CHARS = 8  # a streamed reply is sent in pieces of this many characters, as if tokens
STREAM_PIECE_S = 0.002  # between pieces, as a server generating them would: a client can leave mid-reply


def embedding(text: str, dims: int = EMBEDDING_DIMS) -> list[float]:
    vector = [0.0] * dims
    for word in text.lower().split():
        vector[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


@dataclass
class Recorded:
    started: float  # time.monotonic() at arrival
    finished: float | None  # when the reply was sent (None while in flight or when the client left)
    model: str
    chunk: str
    behaviour: Behaviour
    body: dict[str, Any]  # the request as sent (messages, model, …)
    streamed: int = 0  # `stream: true`: the reply's pieces sent before it ended or the client left


class ScriptedLLM:
    model = "scripted-policy"

    def __init__(
        self,
        default: Behaviour | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        strict_models: bool = False,
    ) -> None:
        self.default: Behaviour = default or Echo()
        self.host = host
        self.strict_models = strict_models
        self.adapters: dict[str, str] = {}  # loaded LoRA name → path
        self.requests: list[Recorded] = []
        self.embedded = 0  # texts embedded by /v1/embeddings
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._complete, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/load_lora_adapter", self._load_lora_adapter, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, in order."""
        with self._lock:
            self._script.extend(behaviours)

    def start(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the scripted LLM server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    async def _stream(
        self, content: str, body: dict[str, Any], prompt_tokens: int, record: Recorded
    ) -> AsyncIterator[str]:
        """Server-sent events as OpenAI streams a chat completion: one delta per piece, the finish reason,
        then (`stream_options.include_usage`) a usage chunk; with vLLM's `continuous_usage_stats` every
        chunk carries the usage so far. A client that closes the stream stops it."""
        options = body.get("stream_options") or {}
        pieces = [content[i : i + STREAM_PIECE_CHARS] for i in range(0, len(content), STREAM_PIECE_CHARS)]

        def event(choices: list[dict[str, Any]], sent: int | None) -> str:
            chunk: dict[str, Any] = {
                "id": f"chatcmpl-scripted-{len(self.requests)}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": choices,
            }
            if sent is not None:
                chunk["usage"] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": sent,
                    "total_tokens": prompt_tokens + sent,
                }
            return f"data: {json.dumps(chunk)}\n\n"

        continuous = bool(options.get("continuous_usage_stats"))
        for piece in pieces:
            await asyncio.sleep(STREAM_PIECE_S)
            delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            yield event([delta], record.streamed + 1 if continuous else None)
            record.streamed += 1
        yield event(
            [{"index": 0, "delta": {}, "finish_reason": "stop"}], record.streamed if continuous else None
        )
        if options.get("include_usage"):
            yield event([], record.streamed)
        yield "data: [DONE]\n\n"
        record.finished = time.monotonic()

    async def _models(self, _: Request) -> Response:
        names = [self.model, *self.adapters]
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": name, "object": "model", "owned_by": "tests"} for name in names],
            }
        )

    async def _load_lora_adapter(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        self.adapters[str(body["lora_name"])] = str(body["lora_path"])
        return Response(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def _embeddings(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        inputs = body.get("input", [])
        texts = [inputs] if isinstance(inputs, str) else [str(text) for text in inputs]
        self.embedded += len(texts)
        data = [
            {"object": "embedding", "index": n, "embedding": embedding(text)} for n, text in enumerate(texts)
        ]
        tokens = sum(len(text.split()) for text in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "scripted-embedding"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _complete(self, request: Request) -> Response:
        body: dict[str, Any] = await request.json()
        user = next(
            (m.get("content", "") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), ""
        )
        chunk = new_chunk(user if isinstance(user, str) else "")
        if self.strict_models and body.get("model") not in (self.model, *self.adapters):
            error = {"message": f"The model `{body.get('model')}` does not exist.", "code": 404}
            return JSONResponse({"error": error}, status_code=404)
        behaviour = self._next()
        record = Recorded(time.monotonic(), None, str(body.get("model", "")), chunk, behaviour, body)
        self.requests.append(record)
        try:
            while isinstance(behaviour, Delay):
                await asyncio.sleep(behaviour.latency(chunk))
                behaviour = behaviour.then
        except asyncio.CancelledError:  # the server is stopping with this reply still delayed
            return Response(status_code=503)
        response = self._respond(behaviour, body, chunk, record)
        if not isinstance(response, StreamingResponse):  # a stream records its own end
            record.finished = time.monotonic()
        return response

    def _respond(self, behaviour: Behaviour, body: dict[str, Any], chunk: str, record: Recorded) -> Response:
        if isinstance(behaviour, Status):
            error = {"error": {"message": behaviour.message, "type": "scripted", "code": behaviour.code}}
            return JSONResponse(error, status_code=behaviour.code)
        if isinstance(behaviour, Garbage):
            return Response(behaviour.body, media_type="application/json")
        assert isinstance(behaviour, Echo | JsonMemory | Text)
        content = behaviour.content(chunk)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        if body.get("stream"):
            return StreamingResponse(
                self._stream(content, body, prompt_tokens, record), media_type="text/event-stream"
            )
        completion_tokens = len(content.split())
        return JSONResponse(
            {
                "id": f"chatcmpl-scripted-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", self.model),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )
