#!/usr/bin/env bash
# P4's worker CPU per chunk (`bench.ingest_throughput --cpu-per-chunk`) before/after, order flipped every
# round; the bench file of AFTER runs against both trees' code.
#   BEFORE=/tmp/before AFTER=/tmp/after ROUNDS=4 [VENV=.venv] bash p4_cpu.sh > p4_cpu.log
set -euo pipefail
: "${BEFORE:?}" "${AFTER:?}" "${ROUNDS:=4}" "${VENV:=$AFTER/.venv}"
AFTER=$(cd "$AFTER" && pwd)
cp "$AFTER/bench/ingest_throughput.py" "$BEFORE/bench/ingest_throughput.py"
for round in $(seq 1 "$ROUNDS"); do
  if (( round % 2 )); then order="before after"; else order="after before"; fi
  for side in $order; do
    tree=$BEFORE; [[ $side == after ]] && tree=$AFTER
    echo "== round $round $side, load $(cut -d' ' -f1 /proc/loadavg)"
    (cd "$tree" && PYTHONPATH="$tree" OMP_NUM_THREADS=1 nice -n 10 "$VENV/bin/python" -m bench.ingest_throughput \
      --data-dir /work/shared/data --concurrency 32 --cpu-per-chunk 2>&1 | grep -E "CPU per")
  done
done
