#!/usr/bin/env bash
# Section (aa) of ../benchmarks.md, all four items, on a quiet machine (no training process running):
#   bash docs/results/timing_proxy/run.sh          (from the repository root; ~15 minutes)
# Mem0 runs from its own venv (MEM0_VENV, default /work/venv-mem0: `python -m venv … && …/pip install -e '.[bench,dev]'`).
set -uo pipefail
cd "$(dirname "$0")/../../.."
root=$PWD
MEM0_VENV=${MEM0_VENV:-/work/venv-mem0}
trees=$(mktemp -d)
mkdir -p "$trees/before" "$trees/after" "$trees/patched"
git archive 1ca576d | tar -x -C "$trees/before"                 # (w)'s after tree: before (y)
git archive HEAD | tar -x -C "$trees/after"
git archive HEAD | tar -x -C "$trees/patched"
(cd "$trees/patched" && patch -s -p1 < "$root/docs/results/worker_cpu/fixed_prompt.patch")

echo "== 1 timing of (y) $(date -u +%T)"
BEFORE=$trees/before AFTER=$trees/after VENV=.venv OUT=docs/results/timing_proxy P1_ROUNDS=0 \
  bash docs/results/timing_no_tx/run.sh
echo "== 2 Mem0 side by side $(date -u +%T)"
mkdir -p docs/results/mem0
PYTHONPATH=$PWD OMP_NUM_THREADS=1 "$MEM0_VENV/bin/python" -m bench.mem0_overhead --data-dir ../shared/data \
  --json docs/results/mem0/side_by_side.json 2>&1 | grep -v -E "spaCy|fastembed" > docs/results/mem0/side_by_side.log
echo "== 4 (z) again $(date -u +%T)"
BEFORE=$trees/after AFTER=$trees/patched ROUNDS=4 VENV=.venv bash docs/results/cpu_per_chunk/p4_cpu.sh \
  > docs/results/worker_cpu/fixed_prompt_quiet.log 2>&1
echo "== 3 the worker's pool, 10 vs 32 $(date -u +%T)"
mkdir -p docs/results/pool_size
for round in 1 2; do
  if (( round % 2 )); then order="10 32"; else order="32 10"; fi
  for size in $order; do
    echo "== round $round pool $size, load $(cut -d' ' -f1 /proc/loadavg)"
    for options in "--delay-ms 0 --concurrency 32" "--sessions 256 --chunks 3 --delay-ms 1000 --concurrency 128"; do
      # shellcheck disable=SC2086  # the options are words
      MEMALPHA_DB_POOL_SIZE=$size PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python \
        -m bench.ingest_throughput --data-dir ../shared/data $options 2>&1 | grep -E "chunks/s"
    done
  done
done > docs/results/pool_size/p4_c128.log 2>&1
rm -rf "$trees"
echo "== done $(date -u +%T)"
