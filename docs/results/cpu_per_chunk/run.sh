#!/usr/bin/env bash
# P1 before/after side by side (section (j) of ../benchmarks.md): ROUNDS rounds, the order of the
# two trees flipped every round, each run `bench.service_overhead` at 1k and 10k items with
# per-chunk samples. BEFORE and AFTER are checkouts (`git archive`); the same venv runs both.
#   BEFORE=/tmp/before AFTER=/tmp/after ROUNDS=6 OUT=docs/results/cpu_per_chunk bash run.sh
# FIRST=5 ROUNDS=8 adds rounds 5-8 to an earlier run (the order keeps alternating).
set -euo pipefail
: "${BEFORE:?}" "${AFTER:?}" "${OUT:?}" "${ROUNDS:=6}" "${FIRST:=1}" "${CHUNKS:=30}" "${VENV:=$AFTER/.venv}"
mkdir -p "$OUT"
for round in $(seq "$FIRST" "$ROUNDS"); do
  if (( round % 2 )); then order="before after"; else order="after before"; fi
  for side in $order; do
    tree=$BEFORE; [[ $side == after ]] && tree=$AFTER
    load=$(cut -d' ' -f1 /proc/loadavg)
    (cd "$tree" && PYTHONPATH="$tree" OMP_NUM_THREADS=1 nice -n 10 "$VENV/bin/python" -m bench.service_overhead \
      --data-dir /work/shared/data --chunks "$CHUNKS" --warmup 3 --sizes 1000,10000 \
      --json "$OUT/round${round}_${side}.json" | tail -3)
    echo "round $round $side: load before the run $load, after $(cut -d' ' -f1 /proc/loadavg)"
  done
done
