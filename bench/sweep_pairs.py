"""Paired comparisons of budget-sweep runs (`trainer.evaluate.sweep run`) from their per-question rows:
per budget and run, memory − rag-raw, and memory in this run − memory in the first run, each a mean
with its 95% bootstrap CI over the same questions (`bootstrap_ci`).

    python -m bench.sweep_pairs --metric turn_recall --episodes conv-42,conv-43 \
        before=runs/before/locomo.rows.jsonl after=runs/after/locomo.rows.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

from trainer.evaluate.sweep import bootstrap_ci

Rows = dict[tuple[str, int], dict[tuple[str, int], dict[str, Any]]]  # (method, budget) → question → row


def load(path: Path, episodes: set[str] | None) -> Rows:
    out: Rows = defaultdict(dict)
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if episodes is None or row["episode"] in episodes:
            out[(row["variant"].split(":")[0], row["budget"])][(row["episode"], row["question"])] = row
    return out


def _mean_ci(diffs: list[float]) -> str:
    low, high = bootstrap_ci(diffs)
    return f"{fmean(diffs):+.3f} [{low:+.3f}, {high:+.3f}]"


def table(runs: dict[str, Rows], metric: str) -> str:
    first = next(iter(runs))
    lines = [
        f"| budget | run | memory | rag-raw | Δ memory − rag-raw | memory − memory ({first}) | tokens read | items |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for budget in sorted({budget for rows in runs.values() for _, budget in rows}):
        for name, rows in runs.items():
            ours, theirs = rows.get(("memory", budget)), rows.get(("rag-raw", budget))
            if ours is None or theirs is None:
                continue
            keys = [k for k in ours if ours[k][metric] is not None and theirs[k][metric] is not None]
            base = runs[first].get(("memory", budget), {})
            paired = [ours[k][metric] - base[k][metric] for k in keys if k in base] if name != first else []
            lines.append(
                f"| {budget} | {name} | {fmean(ours[k][metric] for k in keys):.3f} | "
                f"{fmean(theirs[k][metric] for k in keys):.3f} | "
                f"{_mean_ci([ours[k][metric] - theirs[k][metric] for k in keys])} | "
                f"{_mean_ci(paired) if paired else '–'} | {fmean(ours[k]['tokens_read'] for k in keys):.0f} | "
                f"{fmean(ours[k]['items'] for k in keys):.1f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep_pairs")
    parser.add_argument("runs", nargs="+", help="label=path/to/run.rows.jsonl; the first is the baseline")
    parser.add_argument("--metric", default="turn_recall", help="a row field: turn_recall, score, …")
    parser.add_argument("--episodes", help="only these episodes (comma-separated ids)")
    args = parser.parse_args(argv)
    episodes = set(args.episodes.split(",")) if args.episodes else None
    runs = {label: load(Path(path), episodes) for label, path in (run.split("=", 1) for run in args.runs)}
    print(table(runs, args.metric))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
