"""Paired comparison of two held-out evaluations, episode by episode (the pre-registered analysis of
docs/results/grpo-squad/PREREGISTRATION.md).

Each evaluation is a records file (`evals/*-greedy.jsonl`, one line per episode with its r1). Episodes
are paired by id; Δ = r1(other) − r1(base) per episode, summarised by its mean. Episodes of one cluster
(a SQuAD article) are not independent, so both the confidence interval and the p-value resample whole
clusters: a percentile cluster bootstrap (clusters drawn with replacement, Δ = their pooled mean) and a
sign-flip permutation test (under H0 "no effect" each cluster's Δs are as likely negated; one sign per
cluster; exact over all 2^k patterns for k ≤ 16 clusters: with k clusters no p below 2/2^k exists).

    python -m trainer.paired --base evals/iter0000-greedy.jsonl \\
        --compare trained=evals/iter0200-greedy.jsonl --compare "base again=evals/again-base-greedy.jsonl" \\
        --out docs/results/grpo-squad
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PAIRED_JSON, PAIRED_TABLE, PAIRED_PLOT = "paired.json", "paired.md", "paired.png"
EXACT_CLUSTERS = 16  # up to 2^16 sign patterns are enumerated; more clusters are sampled


@dataclass(frozen=True)
class Episode:
    cluster: str
    r1: float
    questions: int


@dataclass(frozen=True)
class Paired:
    name: str
    episodes: int  # paired episodes
    clusters: int
    questions: int
    unpaired: int  # episodes in only one of the two files (dropped or missing): reported, not used
    base_r1: float
    other_r1: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    resamples: int


def load_episodes(path: Path) -> dict[str, Episode]:
    """Greedy records: one scored rollout per episode (dropped rollouts have no r1 and are left out)."""
    episodes = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        if record.get("r1") is None or record.get("rollout", 0) != 0:
            continue
        episodes[record["instance_id"]] = Episode(
            cluster=str(record.get("article") or record["instance_id"]),
            r1=float(record["r1"]),
            questions=len(record.get("questions", [])),
        )
    return episodes


def compare(
    name: str, base: dict[str, Episode], other: dict[str, Episode], *, resamples: int = 10_000, seed: int = 0
) -> Paired:
    ids = sorted(base.keys() & other.keys())
    if not ids:
        raise ValueError(f"{name}: no episode is in both evaluations")
    by_cluster: dict[str, list[float]] = defaultdict(list)
    for key in ids:
        by_cluster[base[key].cluster].append(other[key].r1 - base[key].r1)
    sums = np.array([sum(deltas) for deltas in by_cluster.values()])
    sizes = np.array([len(deltas) for deltas in by_cluster.values()], dtype=float)
    delta = float(sums.sum() / sizes.sum())
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(sums), size=(resamples, len(sums)))
    boot = sums[drawn].sum(axis=1) / sizes[drawn].sum(axis=1)
    exact = len(sums) <= EXACT_CLUSTERS  # few clusters: every sign pattern, an exact p
    signs = (
        np.array(list(itertools.product((-1.0, 1.0), repeat=len(sums))))
        if exact
        else rng.choice((-1.0, 1.0), size=(resamples, len(sums)))
    )
    null = (signs * sums).sum(axis=1) / sizes.sum()
    # Every Δ zero: the observed mean is the null's only value, no evidence of any effect (p = 1).
    extreme = np.abs(null) >= abs(delta) - 1e-12
    p_value = float(extreme.mean()) if exact else float((extreme.sum() + 1) / (resamples + 1))
    return Paired(
        name=name,
        episodes=len(ids),
        clusters=len(sums),
        questions=sum(base[key].questions for key in ids),
        unpaired=len(base.keys() ^ other.keys()),
        base_r1=float(np.mean([base[key].r1 for key in ids])),
        other_r1=float(np.mean([other[key].r1 for key in ids])),
        delta=delta,
        ci_low=float(np.quantile(boot, 0.025)),
        ci_high=float(np.quantile(boot, 0.975)),
        p_value=p_value,
        resamples=resamples,
    )


def table(rows: list[Paired], base_name: str = "base") -> str:
    header = (
        f"| comparison | episodes (articles) | questions | {base_name} r1 | other r1 | mean Δ "
        "| 95% cluster-bootstrap CI | sign-flip p |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.episodes} ({row.clusters}) | {row.questions} | {row.base_r1:.4f} | "
            f"{row.other_r1:.4f} | {row.delta:+.4f} | [{row.ci_low:+.4f}, {row.ci_high:+.4f}] | {row.p_value:.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[Paired], path: Path, base_name: str = "base") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.6))
    for index, row in enumerate(rows):
        axis.errorbar(
            row.delta,
            index,
            xerr=[[row.delta - row.ci_low], [row.ci_high - row.delta]],
            fmt="o",
            capsize=4,
        )
        axis.annotate(
            f"p={row.p_value:.3f}", (row.ci_high, index), xytext=(6, -3), textcoords="offset points"
        )
    axis.axvline(0.0, color="grey", linewidth=1)
    axis.set_yticks(range(len(rows)), [f"{row.name} (n={row.episodes})" for row in rows])
    axis.set(
        xlabel=f"mean Δ held-out r1 vs {base_name}, 95% cluster-bootstrap CI", ylim=(-0.7, len(rows) - 0.3)
    )
    axis.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, required=True, help="records of the base model's evaluation")
    parser.add_argument("--base-name", default="base", help="what --base holds, for the table and plot")
    parser.add_argument("--compare", action="append", required=True, metavar="NAME=RECORDS")
    parser.add_argument("--out", type=Path, required=True, help="folder for paired.json / .md / .png")
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args(argv)
    base = load_episodes(args.base)
    rows = []
    for item in args.compare:
        name, _, path = item.partition("=")
        rows.append(compare(name, base, load_episodes(Path(path)), resamples=args.resamples))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / PAIRED_JSON).write_text(json.dumps([asdict(row) for row in rows], indent=1))
    (args.out / PAIRED_TABLE).write_text(table(rows, args.base_name))
    plot(rows, args.out / PAIRED_PLOT, args.base_name)
    print(table(rows, args.base_name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
