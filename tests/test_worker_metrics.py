"""`memalpha worker` serves Prometheus /metrics on MEMALPHA_WORKER_METRICS_PORT: the policy/apply/queue
metrics of a stand-alone worker process count the chunks that process handled (scraped over real HTTP).
It runs on uvloop where it is installed and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import subprocess
import sys
import urllib.request

from conftest import free_port
from store_helpers import running

from app.service import ChunkIn


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, flags=re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


async def _scrape(url: str) -> str:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    for _ in range(100):  # the listener starts once the worker's service has started
        try:
            return await asyncio.to_thread(get)
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"no /metrics at {url}")


async def test_worker_metrics_port_counts_the_chunks_it_processed(store_url: str) -> None:
    port = free_port()
    env = {**os.environ, "MEMALPHA_DATABASE_URL": store_url, "MEMALPHA_POLL_INTERVAL_S": "0.05"}
    env.pop("MEMALPHA_AUTO_MIGRATE", None)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "app.cli", "worker", "--metrics-port", str(port)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        before = await _scrape(url)
        assert _sample(before, "memalpha_policy_latency_seconds_count") == 0
        async with running(store_url, run_workers=False, ingest_wait_timeout_s=60.0) as service:
            texts = ["Ana moved to Lisbon in 2024.", "Ana's sister Rui is a nurse.", "Ana adopted a cat."]
            outcome = await service.ingestion.ingest("tenant-m", "s", [ChunkIn(t) for t in texts], wait=True)
            assert outcome.complete and [c.status for c in outcome.chunks] == ["done"] * 3
        after = await _scrape(url)
        assert _sample(after, "memalpha_policy_latency_seconds_count") == 3
        assert _sample(after, "memalpha_apply_latency_seconds_count") == 3
        assert _sample(after, "memalpha_chunk_queue_wait_seconds_count") == 3
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(worker.communicate(), timeout=30)
    assert worker.returncode == 0, output.decode()
    assert f"metrics http://127.0.0.1:{port}/metrics" in output.decode()
    # the loop `memalpha serve` gets from uvicorn where uvloop is installed (it is, with uvicorn[standard])
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    assert f"event loop {loop}" in output.decode()
