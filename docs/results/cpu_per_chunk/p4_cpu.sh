#!/usr/bin/env bash
# P4's worker CPU per chunk (`bench.ingest_throughput --cpu-per-chunk`) before/after, order flipped every
# round; the bench file of AFTER runs against both trees' code.
#   BEFORE=/tmp/before AFTER=/tmp/after ROUNDS=4 [VENV=.venv] bash p4_cpu.sh > p4_cpu.log
set -euo pipefail
: "${BEFORE:?}" "${AFTER:?}"
AFTER=$(cd "$AFTER" && pwd)
cp "$AFTER/bench/ingest_throughput.py" "$BEFORE/bench/ingest_throughput.py"
ROUNDS=${ROUNDS:-4} AFTER=$AFTER MODE=--cpu-per-chunk bash "$(dirname "$0")/p4.sh"
