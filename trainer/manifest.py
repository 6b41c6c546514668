"""The adapter's manifest (`manifest.json` beside the PEFT files) and the policy's versioned name."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "memalpha-policy-manifest/1"


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
