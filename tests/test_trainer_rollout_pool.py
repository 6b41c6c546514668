"""Rollouts over a pool of servers (trainer/rollout_pool.py): round robin over the live ones; a server
that fails at the transport level (connection refused, HTTP 5xx) leaves the pool and its call goes to
the next; a request the server refuses (HTTP 4xx) is raised, not retried elsewhere. Real HTTP: a closed
port, and small HTTP servers that answer every request with a fixed status; the live member is the
tiny model's local sampler."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import free_port

from app.memory import MemoryState, WordTokenCounter
from app.policy.backend import PolicyError
from trainer.config import LoraConfig, ModelConfig, RolloutConfig
from trainer.models import LoadedPolicy, load_policy
from trainer.rollout_pool import SamplerPool
from trainer.sampling.transformers_policy import TransformersPolicy
from trainer.sampling.vllm_policy import VLLMSamplingPolicy
from trainer.tiny_model import create_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedPolicy:
    base = Path(tmp_path_factory.mktemp("tiny")) / "base"
    create_tiny_model(base, ["Paris is the capital of France."], seed=1)
    return load_policy(
        ModelConfig(source="tiny", name="tiny-qwen2", path=str(base), device="cpu"),
        LoraConfig(r=4),
        tiny_dir=base,
    )


def _send_json(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


@pytest.fixture
def answering() -> Iterator[Callable[[int], str]]:
    servers = []

    def start(status: int) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                _send_json(self, status, b'{"error": {"message": "fixed answer", "type": "test"}}')

            def log_message(self, *_: object) -> None:
                pass

        server, url = _serve(Handler)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _remote(tiny: LoadedPolicy, url: str) -> VLLMSamplingPolicy:
    return VLLMSamplingPolicy(
        url,
        "tiny-qwen2",
        tiny.tokenizer,
        tool_format="alpha",
        counter=WordTokenCounter(),
        prompt_budget_tokens=512,
        max_new_tokens=4,
        timeout_s=5.0,
    )


def _local(tiny: LoadedPolicy) -> TransformersPolicy:
    return TransformersPolicy(
        tiny.model,
        tiny.tokenizer,
        model_name="tiny-qwen2",
        tool_format="alpha",
        counter=WordTokenCounter(),
        prompt_budget_tokens=512,
        max_new_tokens=4,
        temperature=1.0,
    )


def test_failing_servers_leave_the_pool_and_the_rest_carry_the_rollouts(
    tiny: LoadedPolicy, answering
) -> None:
    refused = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    broken = answering(503)
    pool = SamplerPool(
        {refused: _remote(tiny, refused), "local": _local(tiny), broken: _remote(tiny, broken)}
    )

    async def run() -> list[str]:
        replies = [await pool.propose(MemoryState(), f"chunk {i} about Paris") for i in range(4)]
        await pool.aclose()
        return [reply.model for reply in replies]

    assert asyncio.run(run()) == ["tiny-qwen2"] * 4
    assert set(pool.dropped) == {refused, broken} and pool.live == ["local"]
    assert "Connection error" in pool.dropped[refused] and "503" in pool.dropped[broken]


def test_a_refused_request_is_raised_not_retried_elsewhere(tiny: LoadedPolicy, answering) -> None:
    rejecting = answering(400)
    pool = SamplerPool({rejecting: _remote(tiny, rejecting), "local": _local(tiny)})
    with pytest.raises(PolicyError, match="400"):
        asyncio.run(pool.propose(MemoryState(), "a chunk"))
    assert pool.dropped == {}


def test_every_server_down_is_a_policy_error(tiny: LoadedPolicy) -> None:
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    pool = SamplerPool({url: _remote(tiny, url) for url in urls})
    with pytest.raises(PolicyError, match="every rollout server failed"):
        asyncio.run(pool.propose(MemoryState(), "a chunk"))
    assert set(pool.dropped) == set(urls)


def test_rollout_urls_are_every_server_once() -> None:
    config = RolloutConfig(backend="vllm", vllm_url="http://a/v1", vllm_urls=["http://b/v1", "http://a/v1"])
    assert config.urls == ["http://a/v1", "http://b/v1"]
    assert RolloutConfig(backend="vllm", vllm_urls=["http://b/v1"]).urls == ["http://b/v1"]
    with pytest.raises(ValueError, match="vllm_url"):
        RolloutConfig(backend="vllm")


def test_max_in_flight_bounds_the_requests_a_server_holds_at_once(tiny: LoadedPolicy) -> None:
    """A CPU vLLM server given every held-out episode at once serves each so slowly that replies pass the
    request timeout; `rollout.max_in_flight` keeps the rest waiting in the client instead."""
    arrived, state = threading.Condition(), {"now": 0, "most": 0}

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            # Held until all 8 are held at once or 1.5 s have passed: a fixed short sleep made the unbounded
            # count depend on how fast a loaded machine sends the 8th request (7 of 8 in one CI run).
            with arrived:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
                arrived.notify_all()
                arrived.wait_for(lambda: state["most"] >= 8, timeout=1.5)
                state["now"] -= 1
            logprobs = {
                "tokens": ["token_id:0"],
                "token_logprobs": [-0.5],
                "text_offset": [0],
                "top_logprobs": None,
            }
            choice = {"index": 0, "text": "x", "finish_reason": "stop", "logprobs": logprobs}
            usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            completion = {"id": "c", "object": "text_completion", "created": 0, "model": "tiny-qwen2"}
            _send_json(self, 200, json.dumps({**completion, "choices": [choice], "usage": usage}).encode())

        def log_message(self, *_: object) -> None:
            pass

    server, url = _serve(Slow)

    def most_at_once(max_in_flight: int) -> int:
        state["most"] = 0
        policy = VLLMSamplingPolicy(
            url,
            "tiny-qwen2",
            tiny.tokenizer,
            tool_format="alpha",
            counter=WordTokenCounter(),
            prompt_budget_tokens=512,
            max_new_tokens=4,
            timeout_s=30.0,
            max_in_flight=max_in_flight,
        )

        async def run() -> None:
            await asyncio.gather(*(policy.propose(MemoryState(), f"chunk {i}") for i in range(8)))
            await policy.aclose()

        asyncio.run(run())
        return state["most"]

    try:
        assert most_at_once(2) == 2
        assert most_at_once(0) == 8  # unbounded: every rollout at once, as before
    finally:
        server.shutdown()
        server.server_close()
