"""The write-once adapter store (trainer/adapter_store.py): what vLLM's filesystem resolver reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.adapter_store import AdapterStoreError, store_adapter
from trainer.manifest import adapter_digest


def _adapter(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True)
    config = {"peft_type": "LORA", "base_model_name_or_path": "/cache/hf/qwen0.5b", "r": 8}
    (path / "adapter_config.json").write_text(json.dumps(config))
    (path / "adapter_model.safetensors").write_bytes(weights)
    (path / "manifest.json").write_text(json.dumps({"name": "n", "base_model": "served-base"}))
    (path / "optimizer.pt").write_bytes(b"not published")
    return path


def test_store_copies_once_with_the_served_base(tmp_path: Path) -> None:
    run = _adapter(tmp_path / "run" / "adapter", b"weights-1")
    root = tmp_path / "adapters"
    stored = store_adapter(run, root, "policy-a", "served-base")
    assert stored == root / "policy-a"
    assert sorted(p.name for p in stored.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
    ]
    config = json.loads((stored / "adapter_config.json").read_text())
    # The resolver only serves an adapter whose base is the model the server serves under that name.
    assert config["base_model_name_or_path"] == "served-base" and config["r"] == 8
    assert [p.name for p in root.iterdir()] == ["policy-a"]  # no staging directory left behind
    digest = adapter_digest(stored)

    # The run's directory is overwritten by the next run: the stored copy is not.
    (run / "adapter_model.safetensors").write_bytes(b"weights-2")
    with pytest.raises(AdapterStoreError, match="never reused"):
        store_adapter(run, root, "policy-a", "served-base")
    assert adapter_digest(stored) == digest

    # Storing the same content again (a re-run publish) is a no-op.
    (run / "adapter_model.safetensors").write_bytes(b"weights-1")
    assert store_adapter(run, root, "policy-a", "served-base") == stored
    assert adapter_digest(stored) == digest and [p.name for p in root.iterdir()] == ["policy-a"]


def test_an_incomplete_adapter_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    run = _adapter(tmp_path / "adapter", b"w")
    (run / "adapter_model.safetensors").unlink()
    root = tmp_path / "adapters"
    with pytest.raises(AdapterStoreError, match="adapter_model.safetensors"):
        store_adapter(run, root, "policy-b", "served-base")
    assert list(root.iterdir()) == []
