"""The finished episodes of an evaluation in progress, kept on disk one by one as each finishes.

A held-out evaluation on a CPU takes hours (58 episodes, 1.5–2.5 h for a 0.5B model); one that a crash or
a session's end cuts short resumes with the episodes it had not finished instead of starting over. The
folder's name holds a digest of the weights being evaluated (and of the run's configuration), so finished
episodes are never reused for other weights: a resumed evaluation scores exactly the model an unbroken one
would have. (It is not bit-identical to an unbroken run: which requests share a decoding batch already
depends on timing, and on a CPU batching changes the last bits of the logits.)
"""

from __future__ import annotations

import hashlib
import pickle
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from trainer.episodes import Episode
from trainer.rollouts import InstanceGroup

PARTIAL_DIR = ".partial"  # under the run's evals/ folder


def weights_digest(model: torch.nn.Module, fingerprint: str) -> str:
    """sha256 over the trainable weights (the LoRA adapter: the base is fixed by the configuration) and
    the configuration's fingerprint."""
    digest = hashlib.sha256(fingerprint.encode())
    for name, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FinishedEpisodes:
    """`evals/.partial/<name>-<weights digest>/`: one pickle per finished episode's group of rollouts."""

    def __init__(self, evals_dir: Path, name: str, digest: str) -> None:
        self.digest = digest[:16]
        self.folder = evals_dir / PARTIAL_DIR / f"{name}-{self.digest}"

    def _path(self, episode: Episode) -> Path:
        return self.folder / f"{hashlib.sha256(episode.instance_id.encode()).hexdigest()[:24]}.pkl"

    def load(self, episodes: Sequence[Episode]) -> dict[str, InstanceGroup]:
        """The groups kept for `episodes`, by instance id."""
        found: dict[str, InstanceGroup] = {}
        for episode in episodes:
            path = self._path(episode)
            if path.exists():
                # written by this trainer into its own run folder (see `keep`)
                group: InstanceGroup = pickle.loads(path.read_bytes())
                found[episode.instance_id] = group
        return found

    def keep(self, group: InstanceGroup) -> None:
        """Store a finished group, unless the infrastructure failed some of its rollouts (a resumed
        evaluation rolls those out again rather than keeping the failure)."""
        if group.dropped:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(group.episode)
        staging = path.with_suffix(".tmp")
        staging.write_bytes(pickle.dumps(group))
        staging.replace(path)  # a crash mid-write leaves no half file under the final name

    def clear(self) -> None:
        """Called once the evaluation's records are written: nothing is left to resume, for these weights
        or any others evaluated under the same name before."""
        parent = self.folder.parent
        if not parent.exists():
            return
        prefix = self.folder.name[: -len(self.digest)]
        for folder in parent.iterdir():
            if folder.name.startswith(prefix) and len(folder.name) == len(self.folder.name):
                shutil.rmtree(folder, ignore_errors=True)
        if not any(parent.iterdir()):
            parent.rmdir()
