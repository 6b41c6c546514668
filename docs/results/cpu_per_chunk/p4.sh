#!/usr/bin/env bash
# P4 (instant policy, 50 sessions × 10 chunks, concurrency 32) before/after, order flipped every round.
#   BEFORE=/tmp/before AFTER=/tmp/after ROUNDS=3 bash p4.sh > p4.log
set -euo pipefail
: "${BEFORE:?}" "${AFTER:?}" "${ROUNDS:=3}" "${VENV:=$AFTER/.venv}"
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order="before after"; else order="after before"; fi
  for side in $order; do
    tree=$BEFORE; [[ $side == after ]] && tree=$AFTER
    echo "== round $round $side"
    (cd "$tree" && PYTHONPATH="$tree" OMP_NUM_THREADS=1 nice -n 10 "$VENV/bin/python" -m bench.ingest_throughput \
      --data-dir /work/shared/data --delay-ms 0 --concurrency 32 2>&1 | grep -E "chunks/s|load")
  done
done
