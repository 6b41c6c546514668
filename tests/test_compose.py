"""docker-compose brought up for real: the project's unmodified docker-compose.yml on a real container
engine (podman + Docker Compose v2 from scripts/containers.sh, which scripts/test.sh sets up), with
.env made from .env.example the way docs/operations.md tells an operator to. Postgres, the api, the
`workers` profile and Prometheus start from images built here (`up -d --build`); the no-GPU variant of
the runbook (extractive policy and answerer, vLLM left down with --no-deps). Through the published API
port: a key created with `memalpha keys create`, a real LoCoMo conversation ingested, an answer with
evidence, the api container restarted while chunks are still being processed and nothing lost,
Prometheus scraping the API and the workers, and `down -v` leaving nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from llm_server import must_not_skip
from shared_data import LOCOMO, SQUAD, require

from app.memory import WordTokenCounter
from trainer.corpus import load_conversation

pytestmark = [pytest.mark.compose, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS = ROOT / "scripts" / "containers.sh"
SERVICES = ("postgres", "api", "worker", "prometheus")


def _engine_env() -> dict[str, str]:
    """A clean environment for docker-compose: the engine's variables only, so that no MEMALPHA_* of
    the test run reaches the containers through the compose file's pass-through entries."""
    out = subprocess.run(["bash", str(CONTAINERS), "env"], capture_output=True, text=True, check=True).stdout
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": os.environ["PATH"]}
    for name, value in re.findall(r"^export (\w+)=(.*)$", out, flags=re.MULTILINE):
        env[name] = value.replace("$PATH", env["PATH"])
    return env


def _missing_engine(env: dict[str, str]) -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed"
    if shutil.which("docker-compose", path=env["PATH"]) is None:
        return "docker-compose (Compose v2) is not installed"
    return None


@dataclass
class Stack:
    env: dict[str, str]
    project: str
    env_file: Path
    api: str
    prometheus: str
    files: tuple[str, ...]
    profiles: tuple[str, ...]
    key: str = ""

    def command(self, *args: str) -> list[str]:
        command = ["docker-compose", "-p", self.project, "--env-file", str(self.env_file)]
        for name in self.files:
            command += ["-f", name]
        for name in self.profiles:
            command += ["--profile", name]
        return [*command, *args]

    def logs(self) -> str:
        """The services' logs, without the probe and scrape lines that repeat every few seconds."""
        out = self.compose("logs", "--no-color", "--timestamps", check=False)
        noise = re.compile(r'"GET /(healthz|metrics|sessions/[^/ ]+) HTTP')
        return "\n".join(line for line in out.splitlines() if not noise.search(line))[-20000:]

    def compose(self, *args: str, timeout: float = 600, check: bool = True, stderr: bool = False) -> str:
        """stdout (and stderr after it with `stderr`: a `run`'s container writes its errors there)."""
        command = self.command(*args)
        result = subprocess.run(
            command, cwd=ROOT, env=self.env, check=False, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result.stdout + (result.stderr if stderr else "")

    def request(
        self, method: str, path: str, body: Any = None, key: str | None = None, timeout: float = 120
    ) -> tuple[int, Any]:
        key = self.key if key is None else key
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method)
        request.add_header("content-type", "application/json")
        if key:
            request.add_header("authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def prometheus_query(self, query: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=10) as response:
            payload = json.load(response)
        assert payload["status"] == "success", payload
        return list(payload["data"]["result"])


def _wait_for(what: str, probe: Any, timeout: float, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except OSError as error:  # connection refused/reset while a container (re)starts
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def _created_key(stack: Stack) -> str | None:
    """A new key, made the way the runbook says; None when the container could not resolve the database's
    service name yet (podman's network DNS answered "Name or service not known" once in CI right after
    the stack came up); any other failure fails the test."""
    command = stack.command("exec", "-T", "api", "memalpha", "keys", "create", "--tenant", "smoke")
    result = subprocess.run(
        command, cwd=ROOT, env=stack.env, check=False, capture_output=True, text=True, timeout=600
    )
    if result.returncode == 0:
        return result.stdout.split()[0]
    if "failed to resolve host" in result.stderr:
        return None
    raise AssertionError(f"keys create failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")


def _healthy(stack: Stack) -> bool:
    with urllib.request.urlopen(f"{stack.api}/healthz", timeout=5) as response:
        return response.status == 200


def _leftovers(stack: Stack) -> list[str]:
    label = f"label=com.docker.compose.project={stack.project}"
    found = []
    for kind in ("ps -a", "volume ls", "network ls"):
        out = subprocess.run(
            ["podman", *kind.split(), "-q", "--filter", label],
            check=False,
            capture_output=True,
            text=True,
            env=stack.env,
        ).stdout.split()
        found += [f"{kind.split()[0]} {name}" for name in out]
    return found


@contextlib.contextmanager
def _brought_up(
    tmp: Path,
    name: str,
    settings: dict[str, str],
    files: tuple[str, ...],
    profiles: tuple[str, ...],
    *up: str,
) -> Iterator[Stack]:
    """`docker-compose up` with an operator's .env: .env.example with the two secrets filled in, the
    ports moved off the defaults (shared machine) and `settings`; logs shown and `down -v` at the end."""
    env = _engine_env()
    missing = _missing_engine(env)
    if missing:
        message = f"compose test needs a container engine: {missing} (bash scripts/containers.sh setup)"
        if must_not_skip():
            pytest.fail(message)
        pytest.skip(message)
    # Started here (if it was not running), so stopped here.
    socket = env["DOCKER_HOST"].removeprefix("unix://")
    ping = subprocess.run(["curl", "-sf", "--unix-socket", socket, "http://d/_ping"], check=False)
    subprocess.run(["bash", str(CONTAINERS), "start"], check=True, capture_output=True)

    api_port, prometheus_port = free_port(), free_port()
    text = (ROOT / ".env.example").read_text()
    secrets = {"POSTGRES_PASSWORD": "smoke-db-pw", "MEMALPHA_BOOTSTRAP_API_KEY": "smoke-bootstrap-key"}
    for var, value in secrets.items():
        text = re.sub(rf"^{var}=$", f"{var}={value}", text, flags=re.MULTILINE)
    settings = {
        "MEMALPHA_PUBLISH_PORT": str(api_port),
        "PROMETHEUS_PUBLISH_PORT": str(prometheus_port),
        **settings,
    }
    text += "\n" + "".join(f"{var}={value}\n" for var, value in settings.items())
    (tmp / ".env").write_text(text)
    stack = Stack(
        env=env,
        project=f"memalpha-{name}-{os.getpid()}",
        env_file=tmp / ".env",
        api=f"http://127.0.0.1:{api_port}",
        prometheus=f"http://127.0.0.1:{prometheus_port}",
        files=files,
        profiles=profiles,
    )
    try:
        started = time.monotonic()
        stack.compose("up", "-d", *up, timeout=1800)
        print(f"compose up {' '.join(up)}: {time.monotonic() - started:.0f}s")
        yield stack
    finally:
        print(stack.logs())
        stack.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
        if ping.returncode != 0:
            subprocess.run(["bash", str(CONTAINERS), "stop"], check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The runbook's no-GPU deployment: extractive policy and answerer; --no-deps keeps vLLM down
    (docs/operations.md, "No GPU")."""
    extractive = {"MEMALPHA_POLICY_BACKEND": "extractive", "MEMALPHA_ANSWERER_BACKEND": "extractive"}
    with _brought_up(
        tmp_path_factory.mktemp("compose"),
        "smoke",
        extractive,
        ("docker-compose.yml",),
        ("workers",),
        *("--build", "--no-deps", *SERVICES),
    ) as stack:
        yield stack


def test_compose_stack_ingests_answers_survives_an_api_restart_and_is_scraped(stack: Stack) -> None:
    ps = [json.loads(line) for line in stack.compose("ps", "--format", "json").splitlines()]
    assert sorted(c["Service"] for c in ps) == sorted(SERVICES) and all(c["State"] == "running" for c in ps)

    # A key of a new tenant; the API refuses requests without one.
    stack.key = _wait_for("a key from `memalpha keys create`", lambda: _created_key(stack), timeout=60)
    assert stack.request("GET", "/sessions", key="")[0] == 401
    assert stack.request("GET", "/readyz?full=1") == (
        200,
        {"status": "ready", "database": True, "policy": True},
    )

    conversation = load_conversation(require(LOCOMO), "conv-26").first_sessions(10)
    counter = WordTokenCounter()
    first = conversation.first_sessions(1).chunks(64, counter)
    chunks = conversation.chunks(64, counter)
    assert chunks[: len(first)] == first
    half = len(first) + (len(chunks) - len(first)) // 2

    # Session 1 of the conversation, processed before the reply; then a question it answers.
    status, body = stack.request("POST", "/sessions/conv-26/ingest", {"chunks": first, "wait": True})
    assert status == 200 and [c["status"] for c in body["chunks"]] == ["done"] * len(first), body
    qa = next(q for q in conversation.qa if q.question == "When did Caroline go to the LGBTQ support group?")
    status, answer = stack.request(
        "GET", "/sessions/conv-26/answer?" + urllib.parse.urlencode({"q": qa.question})
    )
    assert status == 200 and qa.answer in answer["answer"], answer
    evidence = [item for item in answer["evidence"]["episodic"] if "LGBTQ support group" in item["content"]]
    assert evidence, answer
    items_before = sum(stack.request("GET", "/sessions/conv-26")[1]["items"].values())

    # Sessions 2.. accepted without waiting, then the api container restarted at once.
    status, body = stack.request("POST", "/sessions/conv-26/ingest", {"chunks": chunks[len(first) : half]})
    assert status in (200, 202), body
    status, body = stack.request("POST", "/sessions/conv-26/ingest", {"chunks": chunks[half:], "wait": False})
    assert status == 202, body
    restart_at = datetime.now(UTC)
    stack.compose("restart", "api")
    _wait_for("the api after its restart", lambda: _healthy(stack), timeout=120)

    # Every accepted chunk is in the log once, in order, and processed; some were still open when the
    # restart began (so it did interrupt ingestion).
    def all_done() -> dict[str, Any] | None:
        session = stack.request("GET", "/sessions/conv-26")[1]
        return session if session["chunks"]["done"] == len(chunks) else None

    session = _wait_for("all chunks processed", all_done, timeout=300)
    assert session["next_seq"] == len(chunks) + 1 and session["chunks"]["failed"] == 0, session
    log: list[dict[str, Any]] = []
    while len(log) < len(chunks):
        status, page = stack.request("GET", f"/sessions/conv-26/chunks?limit=1000&after_seq={len(log)}")
        assert status == 200 and page["chunks"], page
        log += page["chunks"]
    assert [c["content"] for c in log] == chunks and [c["seq"] for c in log] == list(
        range(1, len(chunks) + 1)
    )
    done_at = [datetime.fromisoformat(c["done_at"]) for c in log]
    after_restart = [at for at in done_at if at > restart_at]
    assert after_restart, f"all {len(chunks)} chunks were done before the restart began"
    print(
        f"{len(chunks)} chunks; {len(after_restart)} processed after the api restart began, the last "
        f"{(max(done_at) - restart_at).total_seconds():.1f}s after it; attempts "
        f"{sorted({c['attempts'] for c in log})}"
    )

    # The memory written before the restart is all still there, and grew after it.
    status, memory = stack.request("GET", "/sessions/conv-26/memory")
    assert status == 200 and memory["version"] == session["version"], memory
    kept = {item["id"]: item["content"] for item in memory["episodic"]}
    assert all(kept.get(item["id"]) == item["content"] for item in evidence), evidence
    assert len(memory["semantic"]) + len(memory["episodic"]) > items_before

    status, answer = stack.request(
        "GET", "/sessions/conv-26/answer?" + urllib.parse.urlencode({"q": qa.question})
    )
    assert status == 200 and answer["evidence"]["episodic"], answer

    # Prometheus has scraped the API (the answer above, served by the restarted process) and the
    # stand-alone worker (its own /metrics port, found through the compose DNS).
    def scraped() -> dict[str, float] | None:
        up = {r["metric"]["job"]: float(r["value"][1]) for r in stack.prometheus_query("up")}
        answers = stack.prometheus_query('memalpha_answer_latency_seconds_count{job="memalpha-api"} >= 1')
        worker = stack.prometheus_query('memalpha_policy_latency_seconds_count{job="memalpha-worker"}')
        assert "vllm-answerer" not in up, up  # optional server, no profile: no target, not a down one
        if up.get("memalpha-api") == 1 and up.get("memalpha-worker") == 1 and answers and worker:
            return {**up, "worker chunks": float(worker[0]["value"][1])}
        return None

    print(
        "prometheus:",
        _wait_for("Prometheus to scrape the api and the worker", scraped, timeout=120, interval=3),
    )

    # The runbook's backup command writes a custom-format dump of the application database.
    dump = subprocess.run(
        stack.command("exec", "-T", "postgres", "pg_dump", "-U", "memalpha", "-Fc", "memalpha"),
        check=True,
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        timeout=120,
    ).stdout
    assert dump.startswith(b"PGDMP") and len(dump) > 10_000, dump[:100]


def test_compose_down_v_leaves_nothing(stack: Stack) -> None:
    print(stack.logs())  # of the whole run, before they go
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "20")
    assert _leftovers(stack) == []


@pytest.mark.compose_llm
def test_cpu_profile_writes_through_vllm_cpu_then_through_an_adapter_it_trained(tmp_path: Path) -> None:
    """The CPU profile (docker-compose.cpu.yml): the api waits for vLLM-CPU to be healthy and its
    policy, in the `json` tool format, writes a LoCoMo chunk through the real model; then the `train`
    profile's trainer (CPU torch) runs a tiny GRPO job on the same model (deploy/train-cpu.toml),
    `memalpha train publish` loads its adapter into vLLM and makes it the active policy, and the next
    chunk is written through the adapter (the chunk's `model` is the adapter's name). Opt-in
    (MEMALPHA_COMPOSE_LLM=1): it needs the vllm-cpu and torch-cpu base images (scripts/containers.sh
    vllm-cpu / torch-cpu) and ~11 GB of RAM beside the test suite's own vLLM server;
    docs/results/compose-smoke.md has the numbers."""
    model = "qwen2.5-coder-0.5b"
    settings = {
        "MEMALPHA_POLICY_MODEL": model,
        "MEMALPHA_POLICY_TOOL_FORMAT": "json",
        "MEMALPHA_POLICY_MAX_TOKENS": "320",
        "MEMALPHA_POLICY_MAX_CALLS": "6",
        "MEMALPHA_POLICY_PROMPT_BUDGET_TOKENS": "2048",
        "MEMALPHA_POLICY_TIMEOUT_S": "900",
        "MEMALPHA_POLICY_MAX_RETRIES": "0",
        "MEMALPHA_CHUNK_MAX_ATTEMPTS": "1",
        "MEMALPHA_INGEST_WAIT_TIMEOUT_S": "1200",
        "MEMALPHA_ANSWERER_BACKEND": "extractive",
        # The trainer: SQuAD from the shared data, and the key publish switches the policy with.
        "TRAIN_DATA_DIR": str(require(SQUAD).parents[1]),
        "MEMALPHA_ADMIN_KEY": "smoke-bootstrap-key",
    }
    files = ("docker-compose.yml", "docker-compose.cpu.yml")
    # adapters-init (chown of the adapters volume for the trainer's user) is up with the stack: the trainer
    # runs with --no-deps below.
    up = ("--build", "postgres", "vllm", "api", "adapters-init")
    with _brought_up(tmp_path, "cpu", settings, files, ("train",), *up) as stack:
        stack.key = "smoke-bootstrap-key"
        _wait_for("the api to start (migrations first)", lambda: _healthy(stack), timeout=300)
        assert stack.request("GET", "/readyz")[0] == 200
        conversation = json.loads(require(LOCOMO).read_text())[0]["conversation"]
        when = conversation["session_1_date_time"]
        turns = conversation["session_1"]

        def ingest(first_turn: int) -> dict[str, Any]:
            chunk = "\n".join(
                f"[{when}] {t['speaker']}: {t['text']}" for t in turns[first_turn : first_turn + 5]
            )
            # One policy call of a 0.5B model on shared CPUs: minutes (MEMALPHA_INGEST_WAIT_TIMEOUT_S=1200).
            ingest = {"chunks": [chunk], "wait": True}
            status, body = stack.request("POST", "/sessions/conv-26/ingest", ingest, timeout=1300)
            assert status == 200, body
            (result,) = body["chunks"]
            assert result["status"] == "done", result
            status, page = stack.request("GET", f"/sessions/conv-26/chunks?after_seq={result['seq'] - 1}")
            record: dict[str, Any] = page["chunks"][0]
            print(f"chunk {record['seq']}:", json.dumps({k: record[k] for k in ("model", "policy", "usage")}))
            return record

        record = ingest(0)
        assert record["model"] == model, record  # the active policy: the base model as vLLM serves it

        # The train profile: a tiny CPU run (its default command), then publish into the running stack.
        started = time.monotonic()
        # --no-deps: the stack is up; without it compose recreated postgres and vllm under the running api.
        # The run's exit status does not come back through podman's compose run: its output is checked.
        trained = stack.compose("run", "--rm", "--no-deps", "--build", "trainer", timeout=5400, stderr=True)
        print(trained[-3000:])
        assert "adapter: /adapters/runs/cpu/adapter" in trained, trained[-3000:]
        print(f"trainer run: {time.monotonic() - started:.0f}s")
        publish = ("train", "publish", "--adapter", "/adapters/runs/cpu/adapter", "--vllm-url")
        publish += ("http://vllm:8000/v1", "--service-url", "http://api:8000", "--adapters-dir", "/adapters")
        # The canary runs (two held-out chunks rebuilt from the run's config) and is reported; a tiny run's
        # adapter is no candidate for its verdict, which tests/test_publish_canary_llm.py checks.
        publish += ("--canary-chunks", "2", "--force")
        published = stack.compose("run", "--rm", "--no-deps", "trainer", *publish, timeout=900, stderr=True)
        print(published)
        assert "active policy" in published, published
        status, policy = stack.request("GET", "/policy")
        assert status == 200 and policy["name"] != model and policy["base_model"] == model, policy

        record = ingest(5)
        assert record["model"] == policy["name"], record  # written through the adapter
