"""Section (bb) 2 of ../benchmarks.md: chunks/s and policy calls in flight per variant, from c128.log.

.venv/bin/python docs/results/c128_bound/plot.py    (writes c128.png and c128.json beside the log)
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
VARIANT = re.compile(r"== round (\d+), (\d+) chunks per session, spread ([\d.]+)")
RATE = re.compile(
    r"(\d) process\(es\): \d+ chunks done in\s+[\d.]+ s =\s+([\d.]+) chunks/s; policy calls in flight\s+([\d.]+)"
    r" on average, claim to done\s+(\d+) ms, worker CPU\s+(\d+)%"
)


def main() -> None:
    runs: dict[tuple[str, int], list[dict[str, float]]] = defaultdict(list)
    variant = ""
    for line in (HERE / "c128.log").read_text().splitlines():
        if found := VARIANT.search(line):
            chunks, spread = found.group(2), float(found.group(3))
            variant = f"{chunks} chunks/session, " + (f"latency ±{spread:.0%}" if spread else "fixed latency")
        elif found := RATE.search(line):
            processes = int(found.group(1))
            rate, flight, claim_ms, cpu = (float(found.group(n)) for n in (2, 3, 4, 5))
            runs[variant, processes].append(
                {"chunks_s": rate, "in_flight": flight, "claim_to_done_ms": claim_ms, "worker_cpu_pct": cpu}
            )
    variants = list(dict.fromkeys(v for v, _ in runs))
    (HERE / "c128.json").write_text(
        json.dumps({f"{v} | {p} process(es)": r for (v, p), r in runs.items()}, indent=2) + "\n"
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    for offset, processes in ((-width / 2, 1), (width / 2, 2)):
        for axis, key in zip(axes, ("chunks_s", "in_flight"), strict=True):
            values = [[r[key] for r in runs[v, processes]] for v in variants]
            xs = [i + offset for i in range(len(variants))]
            axis.bar(xs, [statistics.fmean(v) for v in values], width, label=f"{processes} process(es)")
            for x, vals in zip(xs, values, strict=True):
                axis.plot([x] * len(vals), vals, "k.", markersize=4)
    for axis, title in zip(
        axes, ("chunks/s (bars: mean of rounds; dots: rounds)", "policy calls in flight"), strict=True
    ):
        axis.set_xticks(range(len(variants)), [v.replace(", ", "\n") for v in variants], fontsize=8)
        axis.axhline(100 if axis is axes[0] else 128, color="grey", linestyle="--", linewidth=1)
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=8)
    fig.suptitle("1 s policy, C = 128, 256 sessions (dashed: the goal of 100 chunks/s; C = 128)", fontsize=10)
    fig.tight_layout()
    fig.savefig(HERE / "c128.png", dpi=110)


if __name__ == "__main__":
    main()
