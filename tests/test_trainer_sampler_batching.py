"""The transformers sampler gathers concurrent requests into one decoding batch: a caller that is cancelled
while its batch decodes (an evaluation stopped, a timeout) must not leave the other callers of that batch
waiting forever."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from tiny_lora import tiny_lora_policy, tiny_sampler

from app.memory import MemoryState
from trainer.models import LoadedPolicy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedPolicy:
    return tiny_lora_policy(tmp_path_factory)


async def test_a_caller_cancelled_mid_batch_does_not_stall_the_others(
    tiny: LoadedPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampler = tiny_sampler(tiny, max_new_tokens=8)
    started, release = threading.Event(), threading.Event()
    sizes: list[int] = []
    sample_batch = sampler.sample_batch

    def held_batch(prompts: list[list[int]]) -> Any:
        sizes.append(len(prompts))
        started.set()
        release.wait(timeout=60)  # the batch is decoding while its first caller is cancelled
        return sample_batch(prompts)

    monkeypatch.setattr(sampler, "sample_batch", held_batch)
    first = asyncio.ensure_future(sampler.propose(MemoryState(), "Paris is the capital of France."))
    second = asyncio.ensure_future(sampler.propose(MemoryState(), "Berlin is the capital of Germany."))
    while not started.is_set():
        await asyncio.sleep(0.01)
    first.cancel()
    release.set()
    reply = await asyncio.wait_for(second, timeout=60)
    assert sizes == [2], "both requests were decoded in one batch"
    assert reply.extras and reply.extras["completion_ids"]
    assert first.cancelled()
