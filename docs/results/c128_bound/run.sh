#!/usr/bin/env bash
# Section (bb) of ../benchmarks.md on a quiet machine (no training process running), main's tree:
#   bash docs/results/c128_bound/run.sh          (from the repository root; ~15 minutes)
# Mem0 runs from its own venv (MEM0_VENV, default /work/venv-mem0: `python -m venv … && …/pip install -e '.[bench,dev]'`).
set -uo pipefail
cd "$(dirname "$0")/../../.."
MEM0_VENV=${MEM0_VENV:-/work/venv-mem0}
OUT=docs/results/c128_bound
run() { PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 10 "$@"; }
python3 -m timeit -r 5 "sum(i*i for i in range(1000000))" > "$OUT/calibration.txt"
echo "== 1 Mem0 side by side $(date -u +%T)"
mkdir -p docs/results/mem0
run "$MEM0_VENV/bin/python" -m bench.mem0_overhead --data-dir ../shared/data \
  --json docs/results/mem0/side_by_side.json 2>&1 | grep -v -E "spaCy|fastembed" > docs/results/mem0/side_by_side.log
echo "== 2 what bounds C = 128 $(date -u +%T)"
for round in 1 2; do
  variants=("3 0" "3 0.5" "9 0" "9 0.5")
  (( round % 2 )) || variants=("9 0.5" "9 0" "3 0.5" "3 0")
  for variant in "${variants[@]}"; do
    read -r chunks spread <<< "$variant"
    echo "== round $round, $chunks chunks per session, spread $spread, load $(cut -d' ' -f1 /proc/loadavg)"
    run .venv/bin/python -m bench.ingest_throughput --data-dir ../shared/data --sessions 256 --chunks "$chunks" \
      --delay-ms 1000 --concurrency 128 --latency-spread "$spread" 2>&1 | grep -E "chunks/s"
  done
done > "$OUT/c128.log" 2>&1
echo "== 3 the worker's pool, 10 vs 32 $(date -u +%T)"
for round in 1 2; do
  if (( round % 2 )); then order="10 32"; else order="32 10"; fi
  for size in $order; do
    echo "== round $round pool $size, load $(cut -d' ' -f1 /proc/loadavg)"
    for options in "--delay-ms 0 --concurrency 32" "--sessions 256 --chunks 3 --delay-ms 1000 --concurrency 128"; do
      # shellcheck disable=SC2086  # the options are words
      MEMALPHA_DB_POOL_SIZE=$size run .venv/bin/python -m bench.ingest_throughput --data-dir ../shared/data \
        $options 2>&1 | grep -E "chunks/s"
    done
  done
done > "$OUT/pool_size.log" 2>&1
echo "== done $(date -u +%T)"
