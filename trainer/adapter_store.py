"""The write-once adapter store: `<root>/<name>/` holds the published adapter called `name`, forever.

This is the directory vLLM's filesystem resolver (`VLLM_PLUGINS=lora_filesystem_resolver`,
`VLLM_LORA_RESOLVER_CACHE_DIR=<root>`) reads when a request names a model it does not have, so a restarted
or new replica serves every published adapter without a call; the service reloads from it too. The resolver
only accepts an adapter whose `adapter_config.json` names the served model as its base, so the stored copy's
`base_model_name_or_path` is the served name (training records a local weights path there).

A stored name is never overwritten: storing the same name again is a no-op when the content is the same
(a re-run publish) and refused when it differs (a name always means one set of weights). The copy is
written under a temporary name and renamed into place, so a crash never leaves a half-written adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from trainer.manifest import adapter_digest

# PEFT's two files plus the manifest; checkpoints, optimizer state and logs stay in the run.
_FILES = ("adapter_config.json", "adapter_model.safetensors", "manifest.json")


class AdapterStoreError(RuntimeError):
    """The store already holds other weights under this name, or the adapter is incomplete."""


def _write_copy(adapter_dir: Path, target: Path, base_model: str) -> None:
    target.mkdir()
    for name in _FILES:
        source = adapter_dir / name
        if not source.is_file():
            raise AdapterStoreError(f"{adapter_dir} has no {name}")
        shutil.copyfile(source, target / name)
    config_path = target / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


def store_adapter(adapter_dir: Path, root: Path, name: str, base_model: str) -> Path:
    """Copy `adapter_dir` to `root/name` (write-once); the stored directory."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        copy = staging / "adapter"
        _write_copy(adapter_dir, copy, base_model)
        if final.exists():
            if adapter_digest(final) != adapter_digest(copy):
                raise AdapterStoreError(f"{final} already holds other weights; a stored name is never reused")
            return final
        try:
            os.rename(copy, final)  # atomic; fails if another publish stored the name meanwhile
        except OSError:
            if not final.exists() or adapter_digest(final) != adapter_digest(copy):
                raise
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
