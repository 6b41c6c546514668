"""Plot the per-chunk overhead and read latency before/after issue 13 from their JSON (written by
`bench.service_overhead --json` and `bench.read_latency --json`, gathered into one file).

    python -m bench.plot_overhead docs/results/ingest_overhead.json docs/results/ingest_overhead.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def plot(data: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, style in (("before", "o--"), ("after", "s-")):
        rows = data["p1"][label]["sizes"]
        sizes = sorted(int(size) for size in rows)
        for key, what in (("overhead_p50_ms", "wall"), ("overhead_cpu_p50_ms", "CPU")):
            values = [rows[str(size)].get(key) for size in sizes]
            if all(value is not None for value in values):
                left.plot(sizes, values, style, label=f"{label}: {what} p50")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="memory items",
        ylabel="ms per chunk",
        title="P1: service overhead per chunk (Postgres)",
    )
    left.legend(fontsize=8)
    left.grid(True, which="both", alpha=0.3)

    for label, style in (("before", "o--"), ("after", "s-")):
        rows = {size: row for size, row in data["reads"][label].items() if size.isdigit()}
        sizes = sorted(int(size) for size in rows)
        for op in ("search", "answer"):
            right.plot(
                sizes, [rows[str(size)][f"{op}_p50_ms"] for size in sizes], style, label=f"{label}: {op} p50"
            )
    right.axhline(5, color="grey", linewidth=0.8, linestyle=":", label="goal at 10k: 5 ms")
    right.set(
        xscale="log",
        yscale="log",
        xlabel="memory items",
        ylabel="ms per call",
        title="Answer / search latency, service side (no LLM)",
    )
    right.legend(fontsize=8)
    right.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Issue 13 before/after, same machine back to back ({data.get('machine', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    plot(json.loads(args.data.read_text(encoding="utf-8")), args.out)


if __name__ == "__main__":
    main()
