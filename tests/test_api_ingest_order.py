"""Ingestion semantics over HTTP: idempotent re-POSTs and per-session ordering under concurrent POSTs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Api

pytestmark = pytest.mark.timeout(240)

FIRST = "Erin bought a red bicycle in Utrecht last spring."
SECOND = "Erin's sister Fay is a pilot for a cargo airline."


async def _get(api: Api, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = await api.client.get(path, params=params or None, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_idempotent_repost(api: Api) -> None:
    h = await api.tenant()
    chunk = {"content": FIRST, "idempotency_key": "erin-1"}
    first = await api.client.post("/sessions/erin/ingest", headers=h, json={"chunks": [chunk]})
    assert first.status_code == 200, first.text
    original = first.json()["chunks"][0]
    assert original["duplicate"] is False and original["status"] == "done" and original["operations"]
    operations = (await _get(api, "/sessions/erin/operations", h))["operations"]
    memory = await _get(api, "/sessions/erin/memory", h)

    again = await api.client.post("/sessions/erin/ingest", headers=h, json={"chunks": [chunk]})
    assert again.status_code == 200, again.text
    replay = again.json()["chunks"][0]
    assert replay["seq"] == original["seq"] and replay["duplicate"] is True and replay["status"] == "done"

    # Concurrent retries of the same key, next to a new chunk, still land once.
    batch = {"chunks": [chunk, {"content": SECOND, "idempotency_key": "erin-2"}]}
    responses = await asyncio.gather(
        *(api.client.post("/sessions/erin/ingest", headers=h, json=batch) for _ in range(5))
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    results = [r.json()["chunks"] for r in responses]
    assert all(chunks[0]["seq"] == original["seq"] and chunks[0]["duplicate"] for chunks in results)
    second_seqs = {chunks[1]["seq"] for chunks in results}
    assert len(second_seqs) == 1 and original["seq"] not in second_seqs
    assert sum(not chunks[1]["duplicate"] for chunks in results) == 1

    log = (await _get(api, "/sessions/erin/chunks", h))["chunks"]
    assert [c["seq"] for c in log] == [original["seq"], *second_seqs]
    after = (await _get(api, "/sessions/erin/operations", h))["operations"]
    first_ops = [op for op in after if op["chunk_seq"] == original["seq"]]
    assert first_ops == operations, "a replay must not run the chunk's operations again"
    memory_after = await _get(api, "/sessions/erin/memory", h)
    for kind in ("semantic", "episodic"):
        kept = [(i["id"], i["content"]) for i in memory_after[kind] if i["source_seq"] == original["seq"]]
        assert kept == [(i["id"], i["content"]) for i in memory[kind]]


async def test_concurrent_posts_are_processed_in_seq_order(api: Api) -> None:
    h = await api.tenant()
    count = 16
    texts = [
        f"Fact number {i}: the locker of student {i} holds a {word} notebook."
        for i, word in enumerate(
            (
                "amber",
                "beige",
                "cobalt",
                "denim",
                "ebony",
                "fuchsia",
                "gold",
                "hazel",
                "indigo",
                "jade",
                "khaki",
                "lilac",
                "mauve",
                "navy",
                "olive",
                "plum",
            )
        )
    ]

    async def post(text: str, wait: bool) -> dict[str, Any]:
        response = await api.client.post(
            "/sessions/order/ingest", headers=h, json={"chunks": [text], "wait": wait}
        )
        assert response.status_code in (200, 202), response.text
        return dict(response.json()["chunks"][0])

    results = await asyncio.gather(*(post(text, wait=i % 2 == 0) for i, text in enumerate(texts)))
    seqs = [r["seq"] for r in results]
    assert len(set(seqs)) == count
    chunks = await api.settled("order", h)
    assert sorted(c["seq"] for c in chunks) == sorted(seqs) and all(c["status"] == "done" for c in chunks)
    text_of = {r["seq"]: text for r, text in zip(results, texts, strict=True)}

    operations = (await _get(api, "/sessions/order/operations", h, limit=1000))["operations"]
    logged = [op["chunk_seq"] for op in sorted(operations, key=lambda op: op["id"])]
    assert logged == sorted(logged), "operations must be applied in seq order"
    assert set(logged) == set(seqs), "every chunk wrote something"

    memory = await _get(api, "/sessions/order/memory", h)
    for kind in ("semantic", "episodic"):
        sources = [item["source_seq"] for item in memory[kind]]
        assert sources == sorted(sources), f"{kind} items must appear in the order their chunks were accepted"
    for item in memory["semantic"] + memory["episodic"]:
        number = (
            item["content"].split("student ")[-1].split(" ")[0] if "student " in item["content"] else None
        )
        if number is not None:
            assert f"student {number} " in text_of[item["source_seq"]], (item, text_of[item["source_seq"]])
