"""The benches' policy stand-in: the chunk a request is about, and a spread latency (each chunk's drawn
from a hash of the chunk, uniform in seconds × (1 ± spread), the real server holding each reply that long,
concurrently)."""

from __future__ import annotations

import asyncio
import statistics

import httpx

from tests.scripted_llm import Delay, Echo, ScriptedLLM, new_chunk


def test_the_chunk_is_the_last_tagged_one_even_after_a_quoted_chunk_cut_short() -> None:
    assert new_chunk("memory …\n<new_chunk>\n The new one. \n</new_chunk>") == "The new one."
    assert new_chunk("<new_chunk>old</new_chunk> then <new_chunk>new</new_chunk>") == "new"
    # Mem0 quotes recent messages cut at ~300 characters, closing tag and all
    quoted = "## Last k Messages\nuser: <new_chunk>an older paragraph, cut sho...\n\n"
    assert new_chunk(quoted + "## New Messages\nuser: <new_chunk>This one.</new_chunk>\n") == "This one."
    assert new_chunk("no tags at all") == ""


def test_latencies_spread_uniformly_around_the_mean_and_repeat_per_chunk() -> None:
    delay = Delay(1.0, Echo(), spread=0.5)
    latencies = [delay.latency(f"chunk {n}") for n in range(2_000)]
    assert all(0.5 <= latency <= 1.5 for latency in latencies)
    assert abs(statistics.fmean(latencies) - 1.0) < 0.03
    # uniform: a quarter of the draws in each quarter of the range
    quarter = sum(1 for latency in latencies if latency < 0.75) / len(latencies)
    assert 0.21 < quarter < 0.29
    assert delay.latency("chunk 7") == latencies[7]
    assert Delay(1.0, Echo()).latency("chunk 7") == 1.0


def test_the_server_holds_each_reply_for_its_chunk_latency_concurrently() -> None:
    delay = Delay(0.4, Echo(), spread=0.5)
    chunks = [f"paragraph {n}" for n in range(6)]

    async def post_all(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def post(chunk: str) -> None:
                body = {
                    "model": ScriptedLLM.model,
                    "messages": [{"role": "user", "content": f"<new_chunk>{chunk}</new_chunk>"}],
                }
                response = await client.post("/chat/completions", json=body)
                assert response.status_code == 200, response.text

            await asyncio.gather(*(post(chunk) for chunk in chunks))

    with ScriptedLLM(default=delay) as llm:
        asyncio.run(post_all(llm.url))
        held = {r.chunk: r.finished - r.started for r in llm.requests if r.finished is not None}
        starts = [r.started for r in llm.requests]
    assert set(held) == set(chunks)
    for chunk, seconds in held.items():
        # asyncio's timers may fire up to a clock tick early
        assert delay.latency(chunk) - 0.01 <= seconds < delay.latency(chunk) + 0.15, (chunk, seconds)
    assert len({round(seconds, 2) for seconds in held.values()}) > 1  # spread, not one fixed latency
    assert max(starts) - min(starts) < 0.2  # all in flight at once
