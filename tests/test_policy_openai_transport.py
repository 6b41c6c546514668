"""Transport behaviour of the `openai` backend over real HTTP: what it sends per tool format, and how
it retries. A scripted HTTP server plays the endpoint here because a real LLM server cannot be made
to fail on cue; what a real model answers is covered by tests/test_policy_e2e_llm.py."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from scripted_llm import ScriptedLLM

from app.backends import openai_policy_config
from app.memory import MemoryState, WordTokenCounter
from app.policy.backend import PolicyError
from app.policy.openai_backend import OpenAIPolicy, OpenAIPolicyConfig, backoff_s
from app.settings import Settings

CHUNK = "[1:56 pm on 8 May, 2023] Caroline: I went to a LGBTQ support group yesterday."
INSERT_ARGS = {
    "memory_type": "episodic_memory",
    "content": "On 7 May 2023, Caroline went to a support group.",
}


def completion(
    content: str | None = None, tool_calls: list[dict] | None = None, finish_reason: str = "stop"
) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "served-model",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "message": {"role": "assistant", "content": content, "tool_calls": tool_calls or []},
            }
        ],
        "usage": {"prompt_tokens": 321, "completion_tokens": 45, "total_tokens": 366},
    }


@dataclass
class Script:
    """Responses the server gives in order: (status, JSON body, delay in seconds)."""

    replies: list[tuple[int, Any, float]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each request, names in lower case
    paths: list[str] = field(default_factory=list)  # of each request, as the request line gives it


@pytest.fixture
def endpoint() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def _send(self, status: int, body: Any) -> None:
            # a str is sent as it is, as server-sent events
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type", "text/event-stream" if isinstance(body, str) else "application/json"
            )
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"object": "list", "data": [{"id": "served-model", "object": "model"}]})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            script.paths.append(self.path)
            script.requests.append(json.loads(self.rfile.read(length)))
            script.headers.append({name.lower(): value for name, value in self.headers.items()})
            status, body, delay = (
                script.replies.pop(0) if script.replies else (500, {"error": "no script"}, 0)
            )
            time.sleep(delay)
            self._send(status, body)

    class Server(ThreadingHTTPServer):
        daemon_threads = True  # do not wait for the deliberately slow replies at shutdown

        def handle_error(self, request: object, client_address: object) -> None:
            return  # the client hanging up on a slow reply (the timeout test) is expected

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", script
    server.shutdown()
    server.server_close()


_OPEN: list[OpenAIPolicy] = []


@pytest.fixture(autouse=True)
async def _close_backends() -> AsyncIterator[None]:
    """Each test's backends are closed after it (their pooled HTTP sessions)."""
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


def policy(url: str, **overrides: Any) -> OpenAIPolicy:
    settings: dict[str, Any] = {"model": "configured-model", "retry_backoff_s": 0.01, "timeout_s": 5.0}
    config = OpenAIPolicyConfig(base_url=url, **(settings | overrides))
    _OPEN.append(OpenAIPolicy(config, WordTokenCounter()))
    return _OPEN[-1]


async def test_alpha_request_shape_usage_and_model_override(endpoint: tuple[str, Script]) -> None:
    url, script = endpoint
    text = f"✿FUNCTION✿: new_memory_insert\n✿ARGS✿: {json.dumps(INSERT_ARGS)}"
    script.replies.append((200, completion(text), 0))
    backend = policy(url, max_tokens=777, temperature=0.0)
    reply = await backend.propose(MemoryState(), CHUNK, model="adapter-v3")
    await backend.aclose()
    request = script.requests[0]
    assert request["model"] == "adapter-v3"
    assert request["max_tokens"] == 777 and request["temperature"] == 0.0
    assert request["chat_template_kwargs"] == {"enable_thinking": False}
    assert request["stop"] == ["✿RESULT✿", "✿RETURN✿"]
    assert "tools" not in request and "response_format" not in request
    assert "### new_memory_insert" in request["messages"][0]["content"]
    assert [(call.name, call.arguments) for call in reply.calls] == [("new_memory_insert", INSERT_ARGS)]
    assert reply.parse_errors == [] and reply.raw_text == text
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (321, 45)
    assert reply.model == "served-model" and reply.visible_items == 5 and reply.latency_s > 0


async def test_native_request_and_tool_calls(endpoint: tuple[str, Script]) -> None:
    url, script = endpoint
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "new_memory_insert", "arguments": json.dumps(INSERT_ARGS)},
    }
    script.replies.append((200, completion(None, [tool_call], finish_reason="tool_calls"), 0))
    reply = await policy(url, tool_format="native").propose(MemoryState(), CHUNK)
    request = script.requests[0]
    assert request["tool_choice"] == "required"
    assert [tool["function"]["name"] for tool in request["tools"]] == [
        "new_memory_insert",
        "memory_update",
        "memory_delete",
    ]
    # strict: vLLM then constrains the arguments too, not only the call envelope
    assert all(tool["function"]["strict"] is True for tool in request["tools"])
    assert all(tool["function"]["parameters"]["additionalProperties"] is False for tool in request["tools"])
    assert [(call.name, call.arguments) for call in reply.calls] == [("new_memory_insert", INSERT_ARGS)]
    assert json.loads(reply.raw_text)[0]["name"] == "new_memory_insert"


async def test_json_request_and_truncation_is_reported(endpoint: tuple[str, Script]) -> None:
    url, script = endpoint
    cut = '[{"name": "new_memory_insert", "arguments": ' + json.dumps(INSERT_ARGS)[:-20]
    script.replies.append((200, completion(cut, finish_reason="length"), 0))
    reply = await policy(url, tool_format="json", max_calls=5).propose(MemoryState(), CHUNK)
    response_format = script.requests[0]["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["maxItems"] == 5
    assert len(reply.calls) == 1
    assert any("max_tokens" in error for error in reply.parse_errors)


@pytest.mark.parametrize(
    ("tool_format", "stream"), [("alpha", False), ("native", False), ("json", False), ("alpha", True)]
)
async def test_the_body_sent_is_the_one_the_sdks_create_sends(
    scripted_llm: ScriptedLLM, tool_format: str, stream: bool
) -> None:
    """The backend posts its body through the SDK's client, not `chat.completions.create` (whose
    parameter transform costs thousands of calls per request): the server must receive exactly what
    `create` sends for the same parameters, so the served model's protocol cannot drift."""
    backend = policy(
        scripted_llm.url,
        tool_format=tool_format,
        frequency_penalty=0.4,
        max_calls=7,
        repeat_stop_chars=400 if stream else 0,
    )
    await backend.propose(MemoryState(), CHUNK, model="adapter-v3")
    await backend.aclose()
    sent = dict(scripted_llm.requests[-1].body)
    extra = {"chat_template_kwargs": sent.pop("chat_template_kwargs")}
    async with openai.AsyncOpenAI(base_url=scripted_llm.url, api_key="EMPTY", max_retries=0) as client:
        reply = await client.chat.completions.create(**sent, extra_body=extra)
        if stream:
            async for _ in reply:  # type: ignore[union-attr]
                pass
    assert scripted_llm.requests[-1].body == scripted_llm.requests[-2].body
    assert scripted_llm.requests[-1].body.get("stream", False) is stream


async def test_the_api_key_is_sent_as_a_bearer_token(endpoint: tuple[str, Script]) -> None:
    url, script = endpoint
    script.replies.append((200, completion("[]"), 0))
    await policy(url, api_key="s3cret").propose(MemoryState(), CHUNK)
    assert script.headers[0]["authorization"] == "Bearer s3cret"
    assert script.headers[0]["content-type"] == "application/json"


@pytest.mark.parametrize("body", [["not", "an", "object"], "text"])
async def test_a_json_body_that_is_not_a_completion_is_a_policy_error(
    endpoint: tuple[str, Script], body: Any
) -> None:
    url, script = endpoint
    script.replies.append((200, body, 0))
    with pytest.raises(PolicyError, match="not a chat completion"):
        await policy(url, max_retries=0).propose(MemoryState(), CHUNK)
    assert len(script.requests) == 1


async def test_transient_failures_are_retried_with_backoff(endpoint: tuple[str, Script]) -> None:
    url, script = endpoint
    script.replies += [
        (503, {"error": "loading"}, 0),
        (429, {"error": "busy"}, 0),
        (200, completion('[{"name": "memory_delete", "arguments": {"memory_type": "core"}}]'), 0),
    ]
    reply = await policy(url, max_retries=2).propose(MemoryState(), CHUNK)
    assert len(script.requests) == 3
    assert reply.calls[0].arguments == {"memory_type": "core_memory"}


def test_the_backoff_doubles_from_the_configured_base_up_to_30_s() -> None:
    # as tenacity's wait_exponential(multiplier=base, max=30) did before the retry loop was ours
    assert [backoff_s(retry, 0.5) for retry in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_s(1, 0.01) == 0.01


async def test_retries_are_bounded(endpoint: tuple[str, Script]) -> None:
    url, script = endpoint
    script.replies += [(500, {"error": "boom"}, 0)] * 5
    with pytest.raises(PolicyError) as failure:
        await policy(url, max_retries=1).propose(MemoryState(), CHUNK)
    assert failure.value.retryable is True
    assert len(script.requests) == 2
    assert "HTTP 500" in str(failure.value)


async def test_client_errors_are_not_retried(endpoint: tuple[str, Script]) -> None:
    url, script = endpoint
    script.replies += [(400, {"error": {"message": "prompt too long"}}, 0)] * 3
    with pytest.raises(PolicyError) as failure:
        await policy(url, max_retries=2).propose(MemoryState(), CHUNK)
    assert failure.value.retryable is False
    assert len(script.requests) == 1


async def test_timeout_is_a_retryable_policy_error(endpoint: tuple[str, Script]) -> None:
    url, script = endpoint
    script.replies += [(200, completion("[]"), 2.0)] * 2
    with pytest.raises(PolicyError) as failure:
        await policy(url, timeout_s=0.3, max_retries=1).propose(MemoryState(), CHUNK)
    assert failure.value.retryable is True and "timed out" in str(failure.value)
    assert len(script.requests) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_health_and_connection_refused(endpoint: tuple[str, Script]) -> None:
    url, _ = endpoint
    live, dead = policy(url), policy(f"http://127.0.0.1:{_free_port()}/v1", max_retries=1)
    assert await live.health() is True
    assert await dead.health() is False
    with pytest.raises(PolicyError) as failure:
        await dead.propose(MemoryState(), CHUNK)
    assert failure.value.retryable is True


async def test_an_error_event_in_the_stream_is_a_policy_error_not_retried(
    endpoint: tuple[str, Script],
) -> None:
    """vLLM reports a failure after the stream began as an `error` event: the call fails at once (the same
    request would fail again), and what arrived before it is not taken for a reply."""
    url, script = endpoint
    first = {"model": "served-model", "choices": [{"index": 0, "delta": {"content": "[{"}}]}
    error = {"error": {"message": "engine died", "type": "InternalServerError", "code": 500}}
    script.replies.append((200, f"data: {json.dumps(first)}\n\ndata: {json.dumps(error)}\n\n", 0))
    backend = policy(url, tool_format="json", repeat_stop_chars=256)
    with pytest.raises(PolicyError) as failure:
        await backend.propose(MemoryState(), CHUNK)
    await backend.aclose()
    assert "engine died" in str(failure.value) and failure.value.retryable is False
    assert len(script.requests) == 1 and script.requests[0]["stream"] is True


async def test_the_proxy_of_the_environment_is_used(
    endpoint: tuple[str, Script], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured, as the SDK's client honoured it: a policy server behind a corporate proxy is
    reached through it (here the proxy is the scripted server, and the policy's host does not resolve)."""
    url, script = endpoint
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url.removesuffix("/v1"))
    script.replies.append(
        (200, completion(f"✿FUNCTION✿: new_memory_insert\n✿ARGS✿: {json.dumps(INSERT_ARGS)}"), 0)
    )
    backend = policy("http://policy.invalid:8000/v1")
    reply = await backend.propose(MemoryState(), CHUNK)
    await backend.aclose()
    assert script.paths == ["http://policy.invalid:8000/v1/chat/completions"]  # a proxy's absolute form
    assert [call.name for call in reply.calls] == ["new_memory_insert"]


async def test_a_host_in_no_proxy_is_reached_directly(
    endpoint: tuple[str, Script], monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_PROXY wins over HTTP_PROXY for its hosts (a policy server inside the cluster while the proxy is for
    the outside): the request goes straight to the server, not to the proxy, which here refuses connections."""
    url, script = endpoint
    for name in ("http_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):  # lower case would win over upper
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    script.replies.append(
        (200, completion(f"✿FUNCTION✿: new_memory_insert\n✿ARGS✿: {json.dumps(INSERT_ARGS)}"), 0)
    )
    backend = policy(url, max_retries=0)
    reply = await backend.propose(MemoryState(), CHUNK)
    await backend.aclose()
    assert script.paths == ["/v1/chat/completions"]  # origin form: no proxy in between
    assert [call.name for call in reply.calls] == ["new_memory_insert"]


async def test_a_restarted_server_does_not_fail_the_next_call() -> None:
    """The pooled client keeps connections alive between calls; a policy server restarted in between (a
    rollout, a crash) closed them, and the next call goes through on a new connection, with no retry needed.
    (The event loop runs between the restart and the calls, as in the service, so the closes are seen.)"""
    first = ScriptedLLM().start()
    port = first.port
    backend = policy(first.url, model=first.model, max_retries=0, connections=4)
    try:
        await asyncio.gather(*(backend.propose(MemoryState(), CHUNK) for _ in range(4)))  # 4 kept alive
        first.stop()
        await asyncio.sleep(0.2)
        with ScriptedLLM(port=port) as second:
            replies = await asyncio.gather(*(backend.propose(MemoryState(), CHUNK) for _ in range(4)))
            assert len(second.requests) == 4
        assert all(reply.calls for reply in replies)
    finally:
        await backend.aclose()


def test_config_from_settings() -> None:
    settings = Settings(
        policy_backend="openai",
        policy_url="http://vllm:8000/v1",
        policy_tool_format="json",
        policy_max_retries=4,
        policy_retry_backoff_s=2.0,
        policy_max_calls=9,
    )
    config = openai_policy_config(settings)
    assert (
        config.base_url,
        config.tool_format,
        config.max_retries,
        config.retry_backoff_s,
        config.max_calls,
    ) == ("http://vllm:8000/v1", "json", 4, 2.0, 9)
