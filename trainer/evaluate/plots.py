"""PNG plots of a report: score against memory size per method (one panel per data set) and per-category
scores (LoCoMo)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter


class Row(Protocol):
    """What a plot reads of a report row (`report.Row`); a protocol, so plots need not import the
    report that draws them."""

    @property
    def dataset(self) -> str: ...

    @property
    def method(self) -> str: ...

    @property
    def score(self) -> float | None: ...

    @property
    def memory_tokens(self) -> float: ...

    @property
    def categories(self) -> dict[int, float]: ...


def _method_colors(rows: Sequence[Row]) -> dict[str, str]:
    methods = list(dict.fromkeys(row.method for row in rows))
    palette = plt.get_cmap("tab10")
    return {method: palette(n % 10) for n, method in enumerate(methods)}


def plot_score_vs_memory(rows: Sequence[Row], path: Path) -> Path:
    datasets = list(dict.fromkeys(row.dataset for row in rows))
    colors = _method_colors(rows)
    markers = dict(zip(colors, "osD^vPX*" * 4, strict=False))  # coinciding points stay distinguishable
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.8), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        shown = [r for r in rows if r.dataset == dataset and r.score is not None]
        for row in shown:
            ax.scatter(
                [max(row.memory_tokens, 1.0)],
                [row.score],
                color=colors[row.method],
                marker=markers[row.method],
                s=70,
                alpha=0.85,
                label=row.method,
                zorder=3,
            )
        sizes = [max(row.memory_tokens, 1.0) for row in shown]
        log = bool(sizes) and max(sizes) / min(sizes) > 10  # a log axis only where sizes span decades
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short log ranges
        else:
            ax.set_xlim(0, max(sizes, default=1.0) * 1.1)
        ax.set_title(dataset)
        ax.set_xlabel("memory tokens per episode" + (" (log)" if log else ""))
        ax.set_ylabel("score")
        ax.set_ylim(0, 1.05)
        ax.grid(True, alpha=0.3)
    legend: dict[str, object] = {}  # every method once, whichever panel shows it
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        labels = list(legend)
        fig.legend(
            list(legend.values()),
            labels,
            loc="lower center",
            ncol=min(len(labels), 5),
            fontsize=8,
            frameon=False,
        )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_categories(rows: Sequence[Row], path: Path) -> Path:
    """Grouped bars: one group per (data set, category), one bar per method."""
    categorised = [row for row in rows if row.categories]
    groups = sorted({(row.dataset, c) for row in categorised for c in row.categories})
    methods = list(dict.fromkeys(row.method for row in categorised))
    colors = _method_colors(categorised)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(groups) * max(len(methods), 1) * 0.5), 4.0))
    for n, method in enumerate(methods):
        values = []
        for dataset, category in groups:
            row = next((r for r in categorised if r.dataset == dataset and r.method == method), None)
            values.append(row.categories.get(category, 0.0) if row else 0.0)
        positions = [g + (n - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(positions, values, width=width, color=colors[method], label=method)
    multiple = len({dataset for dataset, _ in groups}) > 1
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{d}\ncat {c}" if multiple else f"cat {c}" for d, c in groups])
    ax.set_ylabel("score (LoCoMo: token F1)")
    ax.set_ylim(0, 1.0)
    ax.set_title("score per question category")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
