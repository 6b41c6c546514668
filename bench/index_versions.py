"""The first search after a write: what a new memory version costs the retriever that indexed the
previous one. In-process, no database, lucene scorer, the `bench.text_pool` memory.

Per write (a "chunk"): one semantic and one episodic insert and one update of an older semantic item
(a new version), then one search (top 20 per kind) with the retriever that served the previous version,
timed. With `--before DIR` (another tree of this repository, e.g. unpacked with `git archive`), this
script runs the measurement in that tree and in this one as alternating subprocesses (order flipped
every round; same seeds and questions) and prints the ratio of the medians with a bootstrap CI.

    python -m bench.index_versions --data-dir ../shared/data [--sizes 10000,100000] [--writes 10]
        [--before DIR --rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from app.memory import Item
from app.retrieval import Retriever
from bench.text_pool import load_pool

NOW = datetime(2024, 1, 1, tzinfo=UTC)
HERE = Path(__file__).resolve().parents[1]


def measure(data_dir: Path, sizes: tuple[int, ...], writes: int) -> dict[str, list[float]]:
    """Seconds of the first search after each write, per size."""
    pool = load_pool(data_dir)
    out: dict[str, list[float]] = {}
    for size in sizes:
        state = pool.memory(size)
        retriever = Retriever(scorer="lucene")
        retriever.search(state, "warm up", 20, key="s")  # the index of the loaded version
        rng = random.Random(size)
        for n in range(writes):
            for kind_items in (state.semantic, state.episodic):
                kind_items.append(Item(f"new{state.next_item}", rng.choice(pool.sentences), NOW, NOW))
                state.next_item += 1
            at = rng.randrange(len(state.semantic) - 1)
            old = state.semantic[at]
            state.semantic[at] = Item(old.id, rng.choice(pool.sentences), old.created_at, NOW)
            state.version += 1
            started = time.perf_counter()
            retriever.search(state, pool.questions[n], 20, key="s")
            out.setdefault(str(size), []).append(time.perf_counter() - started)
    return out


def _run_tree(tree: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """This script's measurement with `tree`'s code (its `app` and `bench` packages)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--data-dir", str(args.data_dir.resolve())]
    command += ["--sizes", ",".join(map(str, args.sizes)), "--writes", str(args.writes), "--emit"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def ratio_ci(before: list[float], after: list[float], resamples: int = 4000) -> tuple[float, float, float]:
    """Ratio of medians before / after and its 95% bootstrap CI (each side resampled apart)."""
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(before, k=len(before)))
        / statistics.median(rng.choices(after, k=len(after)))
        for _ in range(resamples)
    )
    point = statistics.median(before) / statistics.median(after)
    return point, ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--sizes", type=lambda text: tuple(int(n) for n in text.split(",")), default=(10_000, 100_000)
    )
    parser.add_argument("--writes", type=int, default=10)
    parser.add_argument("--before", type=Path, help="a tree to compare with, run alternately")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the per-write samples and figures here")
    parser.add_argument("--emit", action="store_true", help=argparse.SUPPRESS)  # a subprocess of --before
    args = parser.parse_args()
    if args.emit:
        print(json.dumps(measure(args.data_dir, args.sizes, args.writes)))
        return
    trees = {"before": args.before, "after": HERE} if args.before else {"after": HERE}
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    loads: list[float] = []
    for round_ in range(args.rounds if args.before else 1):
        for name in list(trees)[:: 1 if round_ % 2 == 0 else -1]:
            for size, values in _run_tree(trees[name], args).items():
                samples[name].setdefault(size, []).extend(v * 1000 for v in values)
            loads.append(os.getloadavg()[0])
    print(
        f"first search after a one-chunk write (2 inserts + 1 update), lucene; load average "
        f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores; ms, median (p90)"
    )
    figures: dict[str, object] = {"load_average": [min(loads), max(loads)], "samples_ms": samples}
    for size in map(str, args.sizes):
        line = f"  {int(size):>7,} items:"
        for name in trees:
            values = samples[name][size]
            p90 = statistics.quantiles(values, n=10)[8] if len(values) > 1 else values[0]
            line += f" {name} {statistics.median(values):8.1f} ({p90:8.1f}), n = {len(values)} |"
        if args.before:
            point, low, high = ratio_ci(samples["before"][size], samples["after"][size])
            figures[f"ratio_{size}"] = [point, low, high]
            line += f" before / after {point:.1f}x (95% CI {low:.1f}-{high:.1f})"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
