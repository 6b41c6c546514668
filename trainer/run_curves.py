"""Two training runs' rollout rewards paired by iteration: a diagnostic of the training signal, not a measurement
of the served policy (that is `trainer.paired` on held-out evaluations).

Two runs of one config (e.g. the treatment and its shuffled-advantage control) draw the same training instances
at every iteration (`{seed}:instances:{iteration}`), so their history rows are paired by iteration. Iteration 1
samples the base model in both runs (Δ = 0 by construction) and is left out: iteration k ≥ 2 samples the weights
after k − 1 updates. Each iteration is one cluster of `trainer.paired.compare` (bootstrap over iterations, an
exact sign-flip test for up to 16 of them).

    python -m trainer.run_curves --treatment runs/squad-grpo/history.jsonl \\
        --control runs/squad-grpo-shuffled/history.jsonl --out docs/results/grpo-squad
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainer.paired import Episode, Paired, compare

CURVES_JSON, CURVES_TABLE, CURVES_PLOT = "run_curves.json", "run_curves.md", "run_curves.png"
KEYS = ("r1", "r2", "repeat_stop_rate")
FIRST_UPDATED_ITERATION = 2


def load_history(path: Path) -> dict[int, dict[str, Any]]:
    rows = (json.loads(line) for line in Path(path).read_text().splitlines() if line.strip())
    return {int(row["iteration"]): row for row in rows}


def paired_by_iteration(
    treatment: dict[int, dict[str, Any]], control: dict[int, dict[str, Any]], key: str
) -> Paired:
    def values(history: dict[int, dict[str, Any]]) -> dict[str, Episode]:
        return {
            str(iteration): Episode(cluster=str(iteration), r1=float(row[key]), questions=0)
            for iteration, row in history.items()
            if iteration >= FIRST_UPDATED_ITERATION and key in row
        }

    return compare(key, values(control), values(treatment))


def table(
    treatment: dict[int, dict[str, Any]], control: dict[int, dict[str, Any]], rows: list[Paired]
) -> str:
    lines = [
        (
            "| measure | iterations paired | control mean | treatment mean | mean Δ (treatment − control) "
            "| 95% bootstrap CI (over iterations) | sign-flip p |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.episodes} | {row.base_r1:.4f} | {row.other_r1:.4f} | {row.delta:+.4f} "
            f"| [{row.ci_low:+.4f}, {row.ci_high:+.4f}] | {row.p_value:.4f} |"
        )
    lines += ["", "| iteration | " + " | ".join(f"{key} T / S" for key in KEYS) + " |"]
    lines.append("|---" * (len(KEYS) + 1) + "|")
    for iteration in sorted(treatment.keys() & control.keys()):
        cells = [
            f"{treatment[iteration].get(key, float('nan')):.3f} / {control[iteration].get(key, float('nan')):.3f}"
            for key in KEYS
        ]
        lines.append(f"| {iteration} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(
    treatment: dict[int, dict[str, Any]], control: dict[int, dict[str, Any]], rows: list[Paired], path: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(KEYS), figsize=(5 * len(KEYS), 3.8))
    for axis, row in zip(axes, rows, strict=True):
        for history, label, color in ((treatment, "treatment", "C0"), (control, "control", "C3")):
            points = sorted((iteration, r[row.name]) for iteration, r in history.items() if row.name in r)
            axis.plot(*zip(*points, strict=True), marker="o", color=color, label=label)
        axis.set(
            xlabel="iteration (same instances in both runs)",
            title=f"{row.name}: Δ {row.delta:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}], "
            f"p={row.p_value:.3f}, n={row.episodes}",
        )
        axis.title.set_fontsize(9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(
        "training rollouts (temperature 1), paired by iteration; iteration 1 = base model in both"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--treatment", type=Path, required=True, help="history.jsonl of the treatment run")
    parser.add_argument("--control", type=Path, required=True, help="history.jsonl of the control run")
    parser.add_argument("--out", type=Path, required=True, help="folder for run_curves.json / .md / .png")
    args = parser.parse_args(argv)
    treatment, control = load_history(args.treatment), load_history(args.control)
    rows = [paired_by_iteration(treatment, control, key) for key in KEYS]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / CURVES_JSON).write_text(json.dumps([asdict(row) for row in rows], indent=1))
    (args.out / CURVES_TABLE).write_text(table(treatment, control, rows))
    plot(treatment, control, rows, args.out / CURVES_PLOT)
    print(table(treatment, control, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
