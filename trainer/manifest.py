"""The adapter's manifest (`manifest.json` beside the PEFT files) and the policy's versioned name."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.contracts.policy import PolicyServing, format_max_calls
from app.policy import prompt_sha256
from trainer.config import TrainConfig

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "memalpha-policy-manifest/1"
# Settings a manifest written before they were recorded was certainly trained under: no trainer before
# `frequency_penalty` or `repeat_stop_chars` existed could sample with either.
_BEFORE_RECORDED: dict[str, Any] = {"frequency_penalty": 0.0, "repeat_stop_chars": 0}


def adapter_digest(adapter_dir: Path) -> str:
    """sha256 over the adapter's weight and config files: equal digests mean equal adapters."""
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update((adapter_dir / name).read_bytes())
    return digest.hexdigest()


def policy_name(prefix: str, run: str, iteration: int, digest: str) -> str:
    """A name that is new for every adapter: run, iteration and content hash (vLLM names are never reused)."""
    return f"{prefix}-{run}-i{iteration:04d}-{digest[:10]}"


def write_manifest(adapter_dir: Path, manifest: dict[str, Any]) -> Path:
    body = {"format": MANIFEST_FORMAT, "created_at": datetime.now(UTC).isoformat(), **manifest}
    path = adapter_dir / MANIFEST_FILE
    path.write_text(json.dumps(body, indent=1, ensure_ascii=False, default=str))
    return path


def read_manifest(adapter_dir: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((adapter_dir / MANIFEST_FILE).read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{adapter_dir / MANIFEST_FILE} is not a {MANIFEST_FORMAT} manifest")
    return manifest


def trained_serving(config: TrainConfig, token_counter: str) -> PolicyServing:
    """The serving settings an adapter was trained under: the service must serve it with the same."""
    rollout = config.rollout
    return PolicyServing(
        tool_format=rollout.tool_format,
        max_new_tokens=rollout.max_new_tokens,
        prompt_budget_tokens=rollout.prompt_budget_tokens,
        token_counter=token_counter,
        max_calls=format_max_calls(rollout.tool_format, rollout.max_calls),
        frequency_penalty=rollout.frequency_penalty,
        repeat_stop_chars=rollout.repeat_stop_chars,
        # The rollout samplers state the default core limit (they build prompts without the settings').
        prompt_sha256=prompt_sha256(rollout.tool_format),
    )


def serving_differences(manifest: dict[str, Any], served: dict[str, Any]) -> list[str]:
    """What differs between an adapter's training settings (manifest) and a service's (GET /policy)."""
    recorded = manifest.get("serving")
    if not isinstance(recorded, dict):
        return ["the manifest records no serving settings (trained before they were recorded)"]
    trained = {**_BEFORE_RECORDED, **recorded}
    return [
        f"{key}: trained {trained.get(key)!r}, served {served.get(key)!r}"
        for key in PolicyServing.model_fields
        if trained.get(key) != served.get(key)
    ]
