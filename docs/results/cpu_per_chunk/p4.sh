#!/usr/bin/env bash
# P4 (instant policy, 50 sessions × 10 chunks, concurrency 32) before/after, order flipped every round.
#   BEFORE=/tmp/before AFTER=/tmp/after ROUNDS=3 bash p4.sh > p4.log
# MODE=--cpu-per-chunk prints the worker's CPU per chunk instead of chunks/s (p4_cpu.sh).
set -euo pipefail
: "${BEFORE:?}" "${AFTER:?}" "${ROUNDS:=3}" "${VENV:=$AFTER/.venv}" "${MODE:=}"
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order="before after"; else order="after before"; fi
  for side in $order; do
    tree=$BEFORE; [[ $side == after ]] && tree=$AFTER
    echo "== round $round $side, load $(cut -d' ' -f1 /proc/loadavg)"
    (cd "$tree" && PYTHONPATH="$tree" OMP_NUM_THREADS=1 nice -n 10 "$VENV/bin/python" -m bench.ingest_throughput \
      --data-dir /work/shared/data --delay-ms 0 --concurrency 32 $MODE 2>&1 | grep -E "chunks/s|load|CPU per")
  done
done
