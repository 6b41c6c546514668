"""`dns+` replica URLs (app/policy/replicas.py): one URL per address the name resolves to (real resolver:
`localhost` from the hosts file, and a name that cannot resolve), the rest as written; the service's
policy backend and `PUT /policy`'s adapter sync see the expanded list."""

from __future__ import annotations

import socket

import pytest

from app.backends import openai_policy_config
from app.memory import WordTokenCounter
from app.policy import OpenAIPolicy
from app.policy.replicas import ReplicaResolutionError, expand_replicas
from app.settings import Settings


def _localhost_addresses() -> list[str]:
    found = {info[4][0] for info in socket.getaddrinfo("localhost", 8000, type=socket.SOCK_STREAM)}
    return [f"[{a}]" if ":" in a else a for a in sorted(found, key=lambda a: (":" in a, a))]


def test_dns_names_expand_to_every_address_and_plain_urls_stay() -> None:
    hosts = _localhost_addresses()
    assert hosts  # the hosts file has localhost
    got = expand_replicas(["http://vllm-a:8000/v1", "dns+http://localhost:8011/v1", "http://vllm-a:8000/v1"])
    assert got == ["http://vllm-a:8000/v1", *(f"http://{host}:8011/v1" for host in hosts)]
    assert expand_replicas(["dns+https://key@localhost/v1"])[0] == f"https://key@{hosts[0]}:443/v1"


def test_a_name_that_does_not_resolve_is_a_clear_error() -> None:
    with pytest.raises(ReplicaResolutionError, match="does not resolve"):
        expand_replicas(["dns+http://no-such-replica.invalid:8000/v1"])


async def test_the_policy_backend_gets_the_expanded_replicas() -> None:
    settings = Settings(
        policy_backend="openai",
        policy_url="http://vllm:8000/v1",
        policy_urls=["dns+http://localhost:8011/v1", "http://vllm-b:8000/v1"],
    )
    policy = OpenAIPolicy(openai_policy_config(settings), WordTokenCounter())
    expected = [*(f"http://{h}:8011/v1" for h in _localhost_addresses()), "http://vllm-b:8000/v1"]
    try:
        assert policy.replica_urls == expected
    finally:
        await policy.aclose()


def test_a_name_that_does_not_resolve_yet_stays_one_url_when_not_strict() -> None:
    urls = ["dns+http://no-such-replica.invalid:8000/v1", "http://vllm-b:8000/v1"]
    assert expand_replicas(urls, strict=False) == ["http://no-such-replica.invalid:8000/v1", urls[1]]
