"""The reward curve as a PNG: per-iteration mean rewards of the rollouts, held-out evaluations, and the
per-iteration diagnostics that say whether the signal can be trusted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

_SERIES = (("total", "R (step reward)"), ("r1", "r1 QA"), ("r2", "r2 tool success"), ("r3", "r3 compression"))
_DIAGNOSTICS = (
    ("truncation_rate", "truncated completions"),
    ("repeat_stop_rate", "repeat-stopped completions"),
    ("zero_variance_groups", "zero-variance groups"),
    ("clip_fraction", "clipped tokens"),
    ("sampler_abs_dlogp", "sampler↔trainer |Δ log p|"),
    ("sampler_kl", "sampler↔trainer KL"),
)


def plot_reward_curve(
    history: Sequence[dict[str, Any]], evals: Sequence[dict[str, Any]], path: Path, title: str
) -> Path:
    figure, (train_axis, eval_axis, diagnostics_axis) = plt.subplots(1, 3, figsize=(16, 4))
    iterations = [row["iteration"] for row in history]
    for key, label in _SERIES:
        if history and key in history[0]:
            train_axis.plot(iterations, [row[key] for row in history], marker="o", label=label)
    train_axis.set(xlabel="iteration", ylabel="mean over rollout steps", title="training rollouts (T=1.0)")
    train_axis.grid(alpha=0.3)
    train_axis.legend(fontsize=8)
    done = [row["iteration"] for row in evals]
    for color, (key, label) in zip(
        ("C1", "C2", "C0"), (("r1", "r1 QA"), ("r2", "r2 tool success"), ("total", "R"))
    ):
        for prefix, style, how in (("", "-", "greedy"), ("sampled_", "--", "sampled")):
            if evals and prefix + key in evals[0]:
                eval_axis.plot(
                    done,
                    [row[prefix + key] for row in evals],
                    marker="s",
                    linestyle=style,
                    color=color,
                    label=f"{label} ({how})",
                )
    for key, label in _DIAGNOSTICS:
        points = [(row["iteration"], row[key]) for row in history if key in row]
        if points:
            diagnostics_axis.plot(*zip(*points, strict=True), marker=".", label=label)
    drops = [(row["iteration"], row["infra_dropped"]) for row in history if row.get("infra_dropped")]
    if drops:
        diagnostics_axis.scatter(
            *zip(*drops, strict=True), marker="x", color="red", label="infra drops (count)"
        )
    diagnostics_axis.set(xlabel="iteration", ylabel="share / nats", title="diagnostics")
    diagnostics_axis.grid(alpha=0.3)
    diagnostics_axis.legend(fontsize=8)
    for axis in (train_axis, eval_axis, diagnostics_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    # The training iterations' span, so that evaluations sit where they were made (one alone at 0 included).
    eval_axis.set_xlim(-0.5, max([0, *done, *iterations]) + 0.5)
    eval_axis.set(xlabel="iteration (0 = base model)", ylabel="mean", title="held-out episodes")
    eval_axis.grid(alpha=0.3)
    eval_axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
