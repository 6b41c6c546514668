"""Before/after ratios of P1's per-chunk medians from `run.sh`'s JSON files: per round, the ratio of
medians with a 95% bootstrap CI (each side resampled); pooled, the geometric mean of the per-round
ratios with a stratified bootstrap (every round's two sides resampled, the geometric mean recomputed).

    python docs/results/cpu_per_chunk/compare.py docs/results/cpu_per_chunk
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

RESAMPLES = 4000
rng = np.random.default_rng(13)


def boot_medians(values: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(values), size=(RESAMPLES, len(values)))
    return np.median(values[picks], axis=1)


def main(folder: Path) -> None:
    runs: dict[int, dict[str, dict]] = {}
    for path in sorted(folder.glob("round*_*.json")):
        match = re.fullmatch(r"round(\d+)_(before|after)\.json", path.name)
        if match:
            runs.setdefault(int(match[1]), {})[match[2]] = json.loads(path.read_text())
    rounds = sorted(n for n, sides in runs.items() if len(sides) == 2)
    for size in ("1000", "10000"):
        for metric, label in (("overhead_cpu_ms", "CPU"), ("overhead_ms", "wall")):
            print(f"\n{int(size):,} items, overhead {label} p50 before / after (95% CI):")
            logs, boots = [], []
            for n in rounds:
                before = np.array(runs[n]["before"]["sizes"][size][metric])
                after = np.array(runs[n]["after"]["sizes"][size][metric])
                ratio = np.median(before) / np.median(after)
                boot = boot_medians(before) / boot_medians(after)
                low, high = np.percentile(boot, [2.5, 97.5])
                p90 = (np.percentile(before, 90), np.percentile(after, 90))
                load = (runs[n]["before"]["load_average"], runs[n]["after"]["load_average"])
                print(
                    f"  round {n}: {np.median(before):6.1f} / {np.median(after):6.1f} ms = {ratio:.2f}x "
                    f"({low:.2f}-{high:.2f}); p90 {p90[0]:6.1f} / {p90[1]:6.1f}; "
                    f"load {load[0]:.1f} / {load[1]:.1f}"
                )
                logs.append(np.log(ratio))
                boots.append(np.log(boot))
            pooled = np.exp(np.mean(logs))
            low, high = np.exp(np.percentile(np.mean(boots, axis=0), [2.5, 97.5]))
            print(f"  pooled (geometric mean, {len(rounds)} rounds): {pooled:.2f}x ({low:.2f}-{high:.2f})")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
