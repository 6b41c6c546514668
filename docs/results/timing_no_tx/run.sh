#!/usr/bin/env bash
# Timing of sections (n) and (o) of ../benchmarks.md, before (2bd90a5) vs after (0a7343c), each a
# `git archive` run by the same venv, the order flipped every round: P1 (`../cpu_per_chunk/run.sh`),
# P4 (`../cpu_per_chunk/p4.sh`) and the 1 s policy at C = 128 across 256 sessions. Later timings of
# other trees reuse it with OUT, the folder for their logs (default: this one).
#   BEFORE=/tmp/t-before AFTER=/tmp/t-after VENV=.venv [OUT=docs/results/…] [P1_ROUNDS=12] bash docs/results/timing_no_tx/run.sh
set -euo pipefail
: "${BEFORE:?}" "${AFTER:?}" "${VENV:?}"
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$here}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
VENV=$(cd "$VENV" && pwd)
export BEFORE AFTER VENV
# The machine's speed, to compare runs made on different machines (the ratios are measured side by side).
"$VENV/bin/python" -m timeit -r 5 "sum(i*i for i in range(1000000))" > "$OUT/calibration.log" 2>&1
# P1_ROUNDS=0 skips P1 (changes outside its path: the policy call's client, the worker process).
if (( ${P1_ROUNDS:=12} > 0 )); then
  ROUNDS=$P1_ROUNDS OUT="$OUT" bash "$here/../cpu_per_chunk/run.sh" > "$OUT/p1.log" 2>&1
fi
ROUNDS=3 bash "$here/../cpu_per_chunk/p4.sh" > "$OUT/p4.log" 2>&1
for round in 1 2; do
  if (( round % 2 )); then order="before after"; else order="after before"; fi
  for side in $order; do
    tree=$BEFORE; [[ $side == after ]] && tree=$AFTER
    echo "== round $round $side, load $(cut -d' ' -f1 /proc/loadavg)"
    (cd "$tree" && PYTHONPATH="$tree" OMP_NUM_THREADS=1 nice -n 10 "$VENV/bin/python" -m bench.ingest_throughput \
      --data-dir /work/shared/data --sessions 256 --chunks 3 --delay-ms 1000 --concurrency 128 2>&1 \
      | grep -E "chunks/s|load")
  done
done > "$OUT/c128.log" 2>&1
