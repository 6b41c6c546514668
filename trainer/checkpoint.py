"""Checkpoints that make a run resumable: the adapter, the optimizer and scheduler, the progress and
every random number generator, written atomically (a crash mid-write leaves the previous one intact).

Layout: `<out>/checkpoints/iter-000003/{adapter/, optim.pt, state.json}`; the newest complete one wins.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel, set_peft_model_state_dict
from peft.utils import load_peft_weights
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

_PREFIX = "iter-"


@dataclass
class TrainerState:
    fingerprint: str  # the config's (TrainConfig.fingerprint): resuming under other settings is refused
    iteration: int = 0  # completed iterations
    optimizer_steps: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per iteration
    evals: list[dict[str, Any]] = field(default_factory=list)  # held-out evaluations


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoints_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def save_checkpoint(
    out_dir: Path,
    model: PeftModel,
    optimizer: Optimizer,
    scheduler: LambdaLR,
    state: TrainerState,
    *,
    keep: int = 2,
) -> Path:
    root = checkpoints_dir(out_dir)
    final = root / f"{_PREFIX}{state.iteration:06d}"
    partial = root / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial / "adapter")
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()},
        partial / "optim.pt",
    )
    (partial / "state.json").write_text(json.dumps(asdict(state), indent=1))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    for old in sorted(root.glob(f"{_PREFIX}*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = sorted(checkpoints_dir(out_dir).glob(f"{_PREFIX}*"))
    return found[-1] if found else None


def load_checkpoint(
    path: Path, model: PeftModel, optimizer: Optimizer, scheduler: LambdaLR, fingerprint: str
) -> TrainerState:
    state = TrainerState(**json.loads((path / "state.json").read_text()))
    if state.fingerprint != fingerprint:
        raise ValueError(
            f"checkpoint {path} was written under another config ({state.fingerprint} != "
            f"{fingerprint}); use a new run.out_dir"
        )
    device = next(model.parameters()).device
    set_peft_model_state_dict(model, load_peft_weights(str(path / "adapter"), device=str(device)))
    saved = torch.load(path / "optim.pt", map_location=device, weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    return state
