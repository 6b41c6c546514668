"""Tables and plots of budget-sweep runs (`trainer.evaluate.sweep`): one PNG per data set with three
panels (score, gold-turn or answer recall, tokens read) against the budget, one line per variant and
run label; one markdown file with the tables and the paired differences."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _recall_metric(run: dict[str, Any]) -> str:
    return "turn_recall" if run["dataset"] == "locomo" else "answer_present"


def plot_dataset(runs: list[dict[str, Any]], out: Path) -> None:
    metric = _recall_metric(runs[0])
    panels = (
        ("score", "score (LoCoMo: token F1)"),
        (metric, "gold-turn recall" if metric == "turn_recall" else "gold answer in context"),
        ("tokens_read", "tokens the answerer read"),
    )
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for run in runs:
        for variant in run["variants"]:
            rows = [row for row in run["table"] if row["variant"] == variant]
            style = "-" if run["label"] != "before" else "--"
            for axis, (key, _) in zip(axes, panels, strict=True):
                axis.plot(
                    [row["budget"] for row in rows],
                    [row[key] if row[key] is not None else float("nan") for row in rows],
                    style,
                    marker="o",
                    markersize=3,
                    label=f"{variant} ({run['label']})",
                )
    for axis, (_, title) in zip(axes, panels, strict=True):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("answer-prompt budget (tokens)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"{runs[0]['dataset']}: budget sweep (extractive writer and answerer)")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def markdown(runs: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_dataset[run["dataset"]].append(run)
    for dataset, group in by_dataset.items():
        lines.append(f"## {dataset}\n")
        for run in group:
            episodes = run["episodes"]
            questions = sum(e["questions"] for e in episodes)
            lines.append(
                f"**{run['label']}**: {len(episodes)} episodes, {questions} questions, stored memory = "
                f"{_fmt(run['stored_share'])} of the input ({sum(e['memory_tokens'] for e in episodes):,} of "
                f"{sum(e['input_tokens'] for e in episodes):,} tokens), rag-raw passages ≤ {run['passage_tokens']} "
                f"tokens; token counter {run['token_counter']}; {run['elapsed_s']} s.\n"
            )
            updates = any(row.get("current") is not None for row in run["table"])
            extra = " current value | stale value |" if updates else ""
            lines.append(
                f"| variant | budget | score | gold-turn recall | answer in context | tokens read |{extra}"
            )
            lines.append("|---|---|---|---|---|---|" + ("---|---|" if updates else ""))
            for row in run["table"]:
                cells = f" {_fmt(row.get('current'))} | {_fmt(row.get('stale'))} |" if updates else ""
                lines.append(
                    f"| {row['variant']} | {row['budget']} | {_fmt(row['score'])} | {_fmt(row['turn_recall'])} | "
                    f"{_fmt(row['answer_present'])} | {_fmt(row['tokens_read'], 0)} |{cells}"
                )
            if run["differences"]:
                lines.append(
                    "\nPaired differences memory − rag-raw (same scorer and mode), mean [95% bootstrap CI]:\n"
                )
                lines.append(
                    "| memory variant | budget | n | Δ score | Δ gold-turn recall | Δ answer in context |"
                )
                lines.append("|---|---|---|---|---|---|")
                for diff in run["differences"]:
                    cells = [
                        f"{_fmt(diff[m]['mean'])} [{_fmt(diff[m]['ci95'][0])}, {_fmt(diff[m]['ci95'][1])}]"
                        if diff[m]["mean"] is not None
                        else "–"
                        for m in ("score", "turn_recall", "answer_present")
                    ]
                    lines.append(
                        f"| {diff['memory']} | {diff['budget']} | {diff['questions']} | {' | '.join(cells)} |"
                    )
            categories = [row for row in run["table"] if "by_category" in row]
            if categories:
                lines.append("\nLoCoMo per category (score / gold-turn recall):\n")
                names = sorted(categories[0]["by_category"])
                lines.append("| variant | budget | " + " | ".join(f"cat {c}" for c in names) + " |")
                lines.append("|---|---|" + "---|" * len(names))
                for row in categories:
                    cells = [
                        f"{_fmt(row['by_category'][c]['score'])} / {_fmt(row['by_category'][c]['turn_recall'])} "
                        f"({row['by_category'][c]['questions']})"
                        for c in names
                    ]
                    lines.append(f"| {row['variant']} | {row['budget']} | {' | '.join(cells)} |")
            lines.append("")
    return "\n".join(lines)


def write_report(runs: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_dataset[run["dataset"]].append(run)
    for dataset, group in by_dataset.items():
        plot_dataset(group, out / f"{dataset}.png")
    (out / "sweep.md").write_text(markdown(runs))
