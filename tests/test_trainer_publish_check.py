"""`memalpha train publish` checks the serving settings before it changes anything: `GET /policy` shows
what the service serves the policy with (`max_calls` included, for the `json` format's constraint), and
publish refuses an adapter whose manifest records other settings unless `--force`.

A real service (uvicorn, real HTTP) whose policy is a scripted OpenAI-compatible server standing in for
vLLM: it lists only its own model, so an adapter that passes the settings check stops at the next step
(the servers must serve the adapter's base model) without anything being stored or registered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import service_settings
from live_server import LiveApi, live

from app.cli import main
from trainer.manifest import write_manifest

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def service(store_url: str, scripted_llm: Any) -> Iterator[tuple[LiveApi, str]]:
    settings = service_settings(
        store_url,
        policy_backend="openai",
        policy_url=scripted_llm.url,
        policy_model=scripted_llm.model,
        policy_tool_format="json",
        policy_max_tokens=96,
        policy_max_calls=3,
    )
    with live(LiveApi(settings)) as server:
        yield server, server.key("publisher", admin=True)


def _publish(adapter: Path, server: LiveApi, key: str, vllm_url: str, *extra: str) -> int:
    return main(
        [
            "train",
            "publish",
            "--adapter",
            str(adapter),
            "--vllm-url",
            vllm_url,
            "--service-url",
            server.url,
            "--admin-key",
            key,
            "--adapters-dir",
            str(adapter.parent / "store"),
            *extra,
        ]
    )


def test_publish_refuses_other_serving_settings_unless_forced(
    service: tuple[LiveApi, str], scripted_llm: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, key = service
    response = server.get("/policy", key)
    assert response.status_code == 200, response.text
    served = response.json()["serving"]
    assert served == {
        "tool_format": "json",
        "max_new_tokens": 96,
        "prompt_budget_tokens": server.settings.policy_prompt_budget_tokens,
        "token_counter": "word-estimate",
        "max_calls": 3,
    }

    def adapter(name: str, serving: dict[str, Any]) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        write_manifest(directory, {"name": name, "base_model": "not-served-base", "serving": serving})
        return directory

    # Trained with the schema's default of 32 calls: the constraint differs, refused before anything else.
    other_calls = adapter("other-calls", {**served, "max_calls": 32})
    assert _publish(other_calls, server, key, scripted_llm.url) == 1
    error = capsys.readouterr().err
    assert "max_calls: trained 32, served 3" in error and "--force" in error
    # A manifest from before max_calls was recorded does not pass either.
    older = adapter("older", {k: v for k, v in served.items() if k != "max_calls"})
    assert _publish(older, server, key, scripted_llm.url) == 1
    assert "max_calls: trained None, served 3" in capsys.readouterr().err

    # Equal settings pass the check, and so does --force: both stop at the base-model check that follows.
    for directory, extra in ((adapter("same", served), ()), (other_calls, ("--force",))):
        assert _publish(directory, server, key, scripted_llm.url, *extra) == 1
        error = capsys.readouterr().err
        assert "not the adapter's base model 'not-served-base'" in error and "max_calls" not in error
    assert not (tmp_path / "store").exists()  # nothing stored
    for name in ("other-calls", "older", "same"):  # nothing registered: the service knows no such policy
        switch = httpx.put(
            f"{server.url}/policy", json={"name": name}, headers={"Authorization": f"Bearer {key}"}
        )
        assert switch.status_code == 404, switch.text
