"""An iteration's rollouts, kept until the checkpoint that holds its update is written.

On a CPU the rollouts are half of an iteration (25–60 min for the 0.5B model); a run stopped between its
rollouts and the next checkpoint (a session's end) resumes with the update instead of rolling out again.
The file holds what the update consumes: the samples, their mean rewards, the rollouts' seconds and every
random number generator's state after the rollouts, so the resumed update is bit-identical to an unbroken
one. The constraint's token masks are left out (~250 MB an iteration for a 0.5B model's vocabulary) and
replayed from the token ids on loading, as the vLLM path does. It is used only on the weights it was rolled
out with: their digest is in the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.checkpoint import checkpoints_dir
from trainer.grpo import TrainSample

_PREFIX = "rollouts-"


@dataclass
class Rollouts:
    samples: list[TrainSample]
    rewards: dict[str, float]
    rollout_s: float
    rng: dict[str, Any]  # trainer.checkpoint.rng_state() right after the rollouts
    digest: str  # trainer.eval_progress.weights_digest of the weights that rolled them out


class PendingRollouts:
    """`<out>/checkpoints/rollouts-000010.pt`: iteration 10's rollouts, until `iter-000010` exists."""

    def __init__(self, out_dir: Path) -> None:
        self.root = checkpoints_dir(out_dir)

    def _path(self, iteration: int) -> Path:
        return self.root / f"{_PREFIX}{iteration:06d}.pt"

    def save(self, iteration: int, rollouts: Rollouts) -> None:
        masked = [sample.allowed is not None for sample in rollouts.samples]
        bare = [dataclasses.replace(sample, allowed=None) for sample in rollouts.samples]
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(iteration)
        staging = path.with_suffix(".tmp")
        fields = {"rewards": rollouts.rewards, "rollout_s": rollouts.rollout_s, "rng": rollouts.rng}
        torch.save({**fields, "digest": rollouts.digest, "samples": bare, "masked": masked}, staging)
        staging.replace(path)  # a crash mid-write leaves no half file under the final name

    def load(
        self, iteration: int, digest: str, replay: Callable[[list[int]], torch.Tensor] | None
    ) -> Rollouts | None:
        """Iteration `iteration`'s rollouts if they were made with these weights; `replay` rebuilds the
        constraint's masks from a completion's token ids."""
        path = self._path(iteration)
        if not path.exists():
            return None
        saved = torch.load(path, weights_only=False)  # written by this trainer into its own run folder
        if saved["digest"] != digest:
            return None
        if any(saved["masked"]) and replay is None:
            raise ValueError(f"{path} holds constrained samples but the run has no constraint to replay")
        samples = [
            dataclasses.replace(sample, allowed=replay(sample.completion_ids))
            if masked and replay
            else sample
            for sample, masked in zip(saved["samples"], saved["masked"], strict=True)
        ]
        return Rollouts(samples, saved["rewards"], saved["rollout_s"], saved["rng"], saved["digest"])

    def clear(self, up_to: int) -> None:
        """Called once checkpoint `up_to` is written: the rollouts of that and earlier iterations are spent."""
        for path in self.root.glob(f"{_PREFIX}*.pt"):
            if int(path.stem.removeprefix(_PREFIX)) <= up_to:
                path.unlink(missing_ok=True)
