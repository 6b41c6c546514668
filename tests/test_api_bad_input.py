"""Bad input gets the documented 4xx and changes nothing (ARCHITECTURE §6): malformed JSON, empty,
oversized and invalid-UTF-8 chunks, unknown memory types, overlong session ids. The state of the
tenant (session list, chunk logs, operation logs, memories) is compared before and after."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Api, running_api, service_settings

pytestmark = pytest.mark.timeout(180)

CHUNK_BYTES = 4_000  # small limits keep the oversized requests cheap
REQUEST_BYTES = 20_000
GOOD = "Bob's favourite colour is teal. He lives in Oslo."


@pytest.fixture
async def small_api(store_url: str) -> AsyncIterator[Api]:
    settings = service_settings(store_url, max_chunk_bytes=CHUNK_BYTES, max_request_bytes=REQUEST_BYTES)
    async with running_api(settings) as running:
        yield running


async def _state(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    sessions = (await api.client.get("/sessions", headers=headers)).json()["sessions"]
    state: dict[str, Any] = {"sessions": sorted(s["id"] for s in sessions)}
    for sid in state["sessions"]:
        for part in ("chunks", "operations", "memory"):
            response = await api.client.get(
                f"/sessions/{sid}/{part}",
                params={"limit": 1000} if part != "memory" else None,
                headers=headers,
            )
            assert response.status_code == 200, response.text
            state[f"{sid}/{part}"] = response.json()
    return state


async def _ingest_counts(api: Api) -> dict[int, float]:
    text = (await api.client.get("/metrics")).text
    counts = {}
    for status in (400, 413):
        found = re.search(
            r'memalpha_http_request_duration_seconds_count\{method="POST",'
            rf'route="/sessions/\{{session_id\}}/ingest",status="{status}"\}} (\S+)',
            text,
        )
        counts[status] = float(found.group(1)) if found else 0.0
    return counts


def _expect(response: Any, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error


def _json_bytes(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    return {"content": body, "headers": headers | {"content-type": "application/json"}}


async def _streamed(body: bytes, piece: int = 4096) -> AsyncIterator[bytes]:
    # A generator body goes out chunked, without Content-Length: the limit must hold while reading.
    for start in range(0, len(body), piece):
        yield body[start : start + piece]


async def test_bad_requests_change_nothing(small_api: Api) -> None:
    api = small_api
    h = await api.tenant()
    assert (
        await api.client.post("/sessions/kept/ingest", headers=h, json={"chunks": [GOOD]})
    ).status_code == 200
    before = await _state(api, h)
    counted = await _ingest_counts(api)
    post = api.client.post

    for sid in ("kept", "fresh"):
        url = f"/sessions/{sid}/ingest"
        # malformed JSON → 400
        _expect(await post(url, **_json_bytes(b'{"chunks": ["unterminated', h)), 400, "malformed_json")
        # invalid UTF-8 in the body → 400; lone surrogates and NUL smuggled in by JSON escapes → 400
        _expect(await post(url, **_json_bytes(b'{"chunks": ["caf\xe9 au lait"]}', h)), 400, "invalid_utf8")
        _expect(
            await post(url, **_json_bytes(b'{"chunks": ["half a pair \\ud83d"]}', h)), 400, "invalid_text"
        )
        _expect(await post(url, **_json_bytes(b'{"chunks": ["nul \\u0000 byte"]}', h)), 400, "invalid_text")
        # empty and blank chunks → 400, also next to a good chunk (the whole request is refused)
        _expect(await post(url, headers=h, json={"chunks": [""]}), 400)
        _expect(await post(url, headers=h, json={"chunks": [GOOD + " again", "  \n\t "]}), 400)
        _expect(await post(url, headers=h, json={"chunks": [{"content": ""}]}), 400)
        # a chunk over the hard limit → 413, also next to a good chunk
        _expect(
            await post(url, headers=h, json={"chunks": ["x" * (CHUNK_BYTES + 1)]}), 413, "payload_too_large"
        )
        _expect(await post(url, headers=h, json={"chunks": ["ok then.", "é" * (CHUNK_BYTES // 2 + 1)]}), 413)
        # a body over the request limit → 413, declared (Content-Length) or streamed
        big = b'{"chunks": ["' + b"y" * REQUEST_BYTES + b'"]}'
        _expect(await post(url, **_json_bytes(big, h)), 413, "payload_too_large")
        streamed = await post(url, **_json_bytes(b"", h) | {"content": _streamed(big)})
        _expect(streamed, 413, "payload_too_large")
        # wrong shapes → 422
        _expect(await post(url, headers=h, json={"chunks": "not a list"}), 422, "invalid_request")
        _expect(await post(url, headers=h, json={"chunks": []}), 422)
        _expect(await post(url, headers=h, json={"chunks": [{"content": 5}]}), 422)
        _expect(
            await post(url, headers=h, json={"chunks": [{"content": "x", "timestamp": "not a time"}]}), 422
        )
        _expect(await post(url, headers=h, json=["a bare list"]), 422)
        # unknown memory types → 4xx
        for response in (
            await post(f"/sessions/{sid}/memory/procedural", headers=h, json={"content": "a rule"}),
            await api.client.patch(f"/sessions/{sid}/memory/bogus/0000", headers=h, json={"content": "x"}),
            await api.client.delete(f"/sessions/{sid}/memory/bogus/0000", headers=h),
            await api.client.get(
                f"/sessions/{sid}/search", params={"q": "teal", "memory_type": "bogus"}, headers=h
            ),
        ):
            assert response.status_code in (400, 404, 422), response.text
        # a core insert is not an operation → 4xx
        response = await post(f"/sessions/{sid}/memory/core", headers=h, json={"content": "x"})
        assert 400 <= response.status_code < 500, response.text

    # overlong and malformed session ids → 4xx on every kind of route
    good = json.dumps({"chunks": [GOOD]}).encode()
    item = json.dumps({"content": GOOD}).encode()
    for sid in ("s" * 1_000_000, "s" * (api.settings.max_session_id_length + 1), "has%20space", "semi;colon"):
        for method, path, body in (
            ("POST", f"/sessions/{sid}/ingest", good),
            ("POST", f"/sessions/{sid}/memory/semantic", item),
            ("PUT", f"/sessions/{sid}/memory/core", item),
            ("POST", f"/sessions/{sid}/import", b'{"memory": {"core": "x"}}'),
            ("GET", f"/sessions/{sid}", b""),
            ("GET", f"/sessions/{sid}/memory", b""),
        ):
            status, answer = await api.raw(method, path, h, body)
            assert status in (400, 404, 422), (method, path[:40], status, answer[:300])
            assert len(answer) < 2_000, "the error must not echo a megabyte of input"

    assert await _state(api, h) == before
    # Requests the body guard turned away before routing still count under their route's template.
    after = await _ingest_counts(api)
    assert after[400] - counted[400] >= 6 and after[413] - counted[413] >= 6, (counted, after)
