"""The deployment files, checked as CI can without a container engine or a cluster: hadolint on the
Dockerfiles, docker-compose 1.29 `config`, promtool, kustomize + strict schema validation, the image's
pinned dependencies in a clean venv, and the container's entrypoint started against the local Postgres
until its health check passes (deploy/validate.sh installs its own tools)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_deploy_validate_script_passes() -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "validate.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "validate: 7 passed, 0 failed" in output, output[-3000:]
