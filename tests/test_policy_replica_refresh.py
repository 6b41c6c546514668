"""`dns+` policy replicas resolved again while the backend runs (app/policy/replica_pool.py): two real
scripted OpenAI servers on one port and two loopback addresses stand for the pods behind a headless
Service, and a resolver the test controls stands for its DNS name (the hosts file is not ours to edit).

Shown: calls follow the name as pods join (a joining pod that lacks the active adapter answers 404, gets
it loaded from the adapter store and the call is retried) and leave (a call in flight on the leaving pod
still returns, later calls avoid it), and a refresh that cannot resolve keeps the current replicas."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from scripted_llm import Delay, ScriptedLLM

from app.backends import openai_policy_config
from app.memory import MemoryState, WordTokenCounter
from app.policy import OpenAIPolicy, OpenAIPolicyConfig
from app.settings import Settings

NAME = "vllm-pods"
ADAPTER = "memalpha-lora-run-i0001-0123456789"
REFRESH_S = 0.3


@pytest.fixture
def pods() -> Iterator[tuple[ScriptedLLM, ScriptedLLM]]:
    with (
        ScriptedLLM(strict_models=True) as first,
        ScriptedLLM(host="127.0.0.2", port=first.port, strict_models=True) as second,
    ):
        yield first, second


class Dns:
    """The name's current addresses; an empty list does not resolve."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.lookups = 0

    def __call__(self, host: str, port: int) -> list[str]:
        assert host == NAME
        self.lookups += 1
        if not self.addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.addresses)


def _done(server: ScriptedLLM) -> int:
    return sum(1 for request in server.requests if request.finished is not None)


async def _propose(policy: OpenAIPolicy, text: str) -> None:
    reply = await policy.propose(MemoryState(), text, model=ADAPTER)
    assert [call.arguments["content"] for call in reply.calls] == [text]


async def test_calls_follow_pods_joining_and_leaving(pods: tuple[ScriptedLLM, ScriptedLLM]) -> None:
    first, second = pods
    first.adapters[ADAPTER] = f"/adapters/{ADAPTER}"  # published while only the first pod ran
    dns = Dns("127.0.0.1")
    config = OpenAIPolicyConfig(
        base_url=f"http://{NAME}:{first.port}/v1",
        model=first.model,
        replica_urls=(f"dns+http://{NAME}:{first.port}/v1",),
        replicas_refresh_s=REFRESH_S,
        adapters_dir="/adapters",
        max_retries=0,
    )
    policy = OpenAIPolicy(config, WordTokenCounter(), resolve=dns)
    try:
        assert policy.replica_urls == [first.url]
        for n in range(3):
            await _propose(policy, f"fact {n} before the scale-up")
        assert (_done(first), _done(second)) == (3, 0)

        dns.addresses = ["127.0.0.1", "127.0.0.2"]  # the Service scales up: the second pod is ready
        await asyncio.sleep(REFRESH_S + 0.1)
        for n in range(4):
            await _propose(policy, f"fact {n} after the scale-up")
        assert policy.replica_urls == [first.url, second.url]
        assert second.adapters == {ADAPTER: f"/adapters/{ADAPTER}"}  # loaded there on its 404
        assert _done(second) >= 1 and _done(first) + _done(second) == 7

        # The first pod leaves while a call on it is in flight: that call still returns.
        first.script(Delay(1.5))
        second.script(Delay(1.5))
        in_flight = asyncio.create_task(_propose(policy, "a slow chunk"))
        while all(request.finished is not None for request in first.requests + second.requests):
            await asyncio.sleep(0.01)
        leaving = first if first.requests[-1].finished is None else second
        staying = second if leaving is first else first
        dns.addresses = [staying.host]
        await asyncio.sleep(REFRESH_S + 0.1)
        before = len(leaving.requests)
        for n in range(3):
            await _propose(policy, f"fact {n} after the scale-down")
        await in_flight
        assert policy.replica_urls == [staying.url]
        assert len(leaving.requests) == before and leaving.requests[-1].finished is not None

        # A refresh that does not resolve (a DNS blip) keeps the replicas it has.
        lookups = dns.lookups
        dns.addresses = []
        await asyncio.sleep(REFRESH_S + 0.1)
        await _propose(policy, "during a DNS blip")
        assert dns.lookups > lookups and policy.replica_urls == [staying.url]
    finally:
        await policy.aclose()


async def test_without_refresh_the_name_is_resolved_at_start_only(
    pods: tuple[ScriptedLLM, ScriptedLLM],
) -> None:
    first, second = pods
    dns = Dns("127.0.0.1")
    config = OpenAIPolicyConfig(
        base_url=first.url,
        model=first.model,
        replica_urls=(f"dns+http://{NAME}:{first.port}/v1",),
        replicas_refresh_s=0,
        max_retries=0,
    )
    policy = OpenAIPolicy(config, WordTokenCounter(), resolve=dns)
    try:
        dns.addresses = ["127.0.0.1", "127.0.0.2"]
        await asyncio.sleep(0.1)
        for n in range(2):
            reply = await policy.propose(MemoryState(), f"fact {n}")
            assert reply.calls
        assert (dns.lookups, _done(first), _done(second)) == (1, 2, 0)
    finally:
        await policy.aclose()


def test_the_service_setting_reaches_the_backend() -> None:
    settings = Settings(
        policy_backend="openai",
        policy_url="http://vllm:8000/v1",
        policy_urls=[f"dns+http://{NAME}:8000/v1"],
        policy_replicas_refresh_s=5,
    )
    config = openai_policy_config(settings)
    assert (config.replica_urls, config.replicas_refresh_s) == ((f"dns+http://{NAME}:8000/v1",), 5.0)
