"""The reward curve as a PNG: per-iteration mean rewards of the rollouts, and held-out evaluations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

_SERIES = (("total", "R (step reward)"), ("r1", "r1 QA"), ("r2", "r2 tool success"), ("r3", "r3 compression"))


def plot_reward_curve(history: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]], path: Path,
                      title: str) -> Path:
    figure, (train_axis, eval_axis) = plt.subplots(1, 2, figsize=(11, 4))
    iterations = [row["iteration"] for row in history]
    for key, label in _SERIES:
        if history and key in history[0]:
            train_axis.plot(iterations, [row[key] for row in history], marker="o", label=label)
    train_axis.set(xlabel="iteration", ylabel="mean over rollout steps", title="training rollouts (T=1.0)")
    train_axis.grid(alpha=0.3)
    train_axis.legend(fontsize=8)
    done = [row["iteration"] for row in evals]
    for color, (key, label) in zip(("C1", "C2", "C0"), (("r1", "r1 QA"), ("r2", "r2 tool success"), ("total", "R"))):
        for prefix, style, how in (("", "-", "greedy"), ("sampled_", "--", "sampled")):
            if evals and prefix + key in evals[0]:
                eval_axis.plot(done, [row[prefix + key] for row in evals], marker="s", linestyle=style, color=color,
                               label=f"{label} ({how})")
    for axis in (train_axis, eval_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    eval_axis.set(xlabel="iteration (0 = base model)", ylabel="mean", title="held-out episodes")
    eval_axis.grid(alpha=0.3)
    eval_axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
