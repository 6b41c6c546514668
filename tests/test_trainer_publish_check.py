"""`memalpha train publish` checks the serving settings before it changes anything: `GET /policy` shows
what the service serves the policy with (`max_calls` included, for the `json` format's constraint), and
publish refuses an adapter whose manifest records other settings unless `--force`.

A real service (uvicorn, real HTTP) whose policy is a scripted OpenAI-compatible server standing in for
vLLM: it lists only its own model, so an adapter that passes the settings check stops at the next step
(the servers must serve the adapter's base model) without anything being stored or registered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import service_settings
from live_server import LiveApi, live
from scripted_llm import Text

from app.cli import main
from app.policy.prompt import prompt_sha256
from trainer.episodes import Episode, save_episodes
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
        policy_frequency_penalty=0.2,
        policy_repeat_stop_chars=256,
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
        "frequency_penalty": 0.2,
        "repeat_stop_chars": 256,
        "prompt_sha256": prompt_sha256("json", server.settings.core_token_limit),
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
    # Sampled without the frequency penalty the service decodes with: another distribution, refused; a
    # manifest from before the penalty was recorded was trained without one (no trainer could apply it).
    unpenalised = adapter("unpenalised", {**served, "frequency_penalty": 0.0})
    assert _publish(unpenalised, server, key, scripted_llm.url) == 1
    assert "frequency_penalty: trained 0.0, served 0.2" in capsys.readouterr().err
    before = adapter("before-penalty", {k: v for k, v in served.items() if k != "frequency_penalty"})
    assert _publish(before, server, key, scripted_llm.url) == 1
    assert "frequency_penalty: trained 0.0, served 0.2" in capsys.readouterr().err
    # Trained without the repeat stop the service applies: rewarded for other text than is applied, refused;
    # likewise a manifest from before the stop was recorded.
    unstopped = adapter("unstopped", {**served, "repeat_stop_chars": 0})
    assert _publish(unstopped, server, key, scripted_llm.url) == 1
    assert "repeat_stop_chars: trained 0, served 256" in capsys.readouterr().err
    before_stop = adapter("before-stop", {k: v for k, v in served.items() if k != "repeat_stop_chars"})
    assert _publish(before_stop, server, key, scripted_llm.url) == 1
    assert "repeat_stop_chars: trained 0, served 256" in capsys.readouterr().err
    # Trained on the prompt of another core limit (the prompt states it): the wording differs, refused.
    other_prompt = adapter("other-prompt", {**served, "prompt_sha256": prompt_sha256("json", 128)})
    assert _publish(other_prompt, server, key, scripted_llm.url) == 1
    assert "prompt_sha256: trained" in capsys.readouterr().err

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


def test_forced_publish_prints_what_it_overrode_and_stores_the_canary(
    service: tuple[LiveApi, str], scripted_llm: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trained with other max_calls, and a canary that fails (the scripted server's replies hold no tool
    call): --force switches, lists every override, and the switch is stored with the canary's result."""
    server, key = service
    served = server.get("/policy", key).json()
    adapter = tmp_path / "forced"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "elsewhere"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"scripted weights")
    write_manifest(
        adapter,
        {
            "name": "forced",
            "base_model": scripted_llm.model,
            "serving": {**served["serving"], "max_calls": 32},
            "eval_metrics": {"eval_after": {"r2": 1.0, "parse_error_rate": 0.0}},
        },
    )
    episodes = tmp_path / "canary.jsonl"
    save_episodes([Episode("a", "squad", ["Alice has a beagle.", "The beagle is named Rex."], [])], episodes)
    extra = ("--canary-episodes", str(episodes), "--canary-chunks", "2", "--canary-margin", "0.25")
    assert _publish(adapter, server, key, scripted_llm.url, *extra) == 1  # refused without --force
    assert "max_calls: trained 32, served 3" in capsys.readouterr().err

    scripted_llm.default = Text("I would rather not.")  # every reply from here on: no tool call
    assert _publish(adapter, server, key, scripted_llm.url, *extra, "--force") == 0
    out = capsys.readouterr().out.splitlines()
    overrides = out[out.index("--force overrode 3 failed check(s):") + 1 :][:3]
    assert overrides == [
        "  serving settings: max_calls: trained 32, served 3",
        "  canary: parse errors 1.00 > manifest 0.00 + 0.25",
        "  canary: r2 0.00 < manifest 1.00 - 0.25",
    ]
    assert out[-1] == f"publish: active policy {served['name']!r} → 'forced'"

    # the switch is recorded with the canary it was forced past
    history = server.get("/policy/activations", key).json()["activations"]
    assert history[0]["to_name"] == "forced"
    canary = history[0]["canary"]
    assert (canary["chunks"], canary["parse_error_rate"], canary["r2"]) == (2, 1.0, 0.0)
    assert canary["expected"] == {"r2": 1.0, "parse_error_rate": 0.0} and canary["margin"] == 0.25
    assert (canary["passed"], canary["forced"]) == (False, True)
    assert canary["failures"] == [line.removeprefix("  canary: ") for line in overrides[1:]]
