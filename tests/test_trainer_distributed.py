"""The update under `accelerate` with two processes (DDP over gloo, on CPU): both processes train on
their share of each mini-batch's prompt groups, every backward but the last under `no_sync`, and end
with the same weights as one process trained on all of it.

Two iterations: AdamW's first step is almost sign(gradient) × lr, so only a second step (and the
gradient norm) tells a correctly summed gradient from one off by a factor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from test_trainer_iteration import _config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def _run(config_file: Path, processes: int, out: Path) -> list[dict[str, Any]]:
    out.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MEMALPHA_DATABASE_URL": f"sqlite+aiosqlite:///{out / 'registry.db'}",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a rendezvous on a free local port
        f"--nproc-per-node={processes}",
        str(ROOT / "tests" / "distributed_iteration.py"),
        str(config_file),
        "2",
        str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(processes)]


def test_two_processes_train_like_one_on_all_the_data(tmp_path: Path) -> None:
    config = _config(tmp_path, "run", iterations=2)
    # cpu: the processes are CPU processes (gloo) even on a machine with a GPU; micro-batches and
    # checkpointing: several backward passes per prompt group, all held back but the process's last.
    config = config.model_copy(
        update={
            "model": config.model.model_copy(update={"device": "cpu"}),
            "grpo": config.grpo.model_copy(update={"micro_batch_tokens": 8, "gradient_checkpointing": True}),
        }
    )
    config_file = tmp_path / "config.json"
    config_file.write_text(config.model_dump_json())

    one = _run(config_file, 1, tmp_path / "one")[0]
    first, second = _run(config_file, 2, tmp_path / "two")
    assert (one["world"], first["world"], second["world"]) == (1, 2, 2)

    # the same rollouts (the main process draws them) and statistics summed over both processes
    for row_one, row_first, row_second in zip(one["rows"], first["rows"], second["rows"], strict=True):
        assert row_first == {
            **row_second,
            "rollout_s": row_first["rollout_s"],
            "update_s": row_first["update_s"],
        }
        assert row_first["samples"] == row_one["samples"] and row_first["tokens"] == row_one["tokens"]
        for key in ("r1", "r2", "total"):
            assert row_first[key] == row_one[key]
        for key in ("loss", "policy_loss", "kl", "ratio_mean", "grad_norm"):
            assert row_first[key] == pytest.approx(row_one[key], rel=1e-5, abs=1e-7), key
    assert one["rows"][0]["grad_norm"] > 0

    # both processes hold the same weights: those of one process trained on all the samples
    assert first["weights"].keys() == second["weights"].keys() == one["weights"].keys()
    for name, tensor in one["weights"].items():
        assert torch.equal(first["weights"][name], second["weights"][name]), name
        assert torch.allclose(first["weights"][name], tensor, rtol=1e-4, atol=1e-6), name
    moved = [name for name, tensor in one["weights"].items() if "lora_B" in name and tensor.abs().max() > 0]
    assert moved, "the update must change the adapter"
