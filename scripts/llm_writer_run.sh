#!/usr/bin/env bash
# Issue 11, Build 4: write LoCoMo memories with Qwen2.5-Coder-1.5B and -0.5B through the service's `openai`
# policy backend (tool format `json`) on llama.cpp's llama-server, then sweep them against rag-raw and the
# extractive writer. Resumable: every reply is cached under $CACHE as it arrives; run it again to go on.
#
#   nice -n 15 bash scripts/llm_writer_run.sh     # (on a shared machine)
#
# Env: CONVERSATIONS (default conv-30,conv-26), CACHE (default docs/results/sweep/llm-writer-cache), DATA_DIR,
# OUT (default docs/results/sweep/llm-writer.json), PORT_15 / PORT_05 (llama-server ports).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CONVERSATIONS=${CONVERSATIONS:-conv-30,conv-26}
CACHE=${CACHE:-$PWD/docs/results/sweep/llm-writer-cache}  # committed, so a fresh machine resumes
DATA_DIR=${DATA_DIR:-${MEMALPHA_DATA_DIR:-../shared/data}}
OUT=${OUT:-docs/results/sweep/llm-writer.json}
PORT_15=${PORT_15:-18615}
PORT_05=${PORT_05:-18605}
export PYTHONPATH=$PWD

for model in qwen1.5b qwen0.5b; do python3 scripts/local_llm.py setup --engine llama --model "$model"; done
# The servers run in this process group (foreground mode), so a pause of the group pauses them too.
python3 scripts/local_llm.py serve --engine llama --model qwen1.5b --port "$PORT_15" --max-model-len 8192 --foreground &
python3 scripts/local_llm.py serve --engine llama --model qwen0.5b --port "$PORT_05" --max-model-len 8192 --foreground &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
for port in "$PORT_15" "$PORT_05"; do
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 2; done
done

status=0
for conversation in ${CONVERSATIONS//,/ }; do
  for spec in "memory-llm-1.5b $PORT_15 qwen2.5-coder-1.5b" "memory-llm-0.5b $PORT_05 qwen2.5-coder-0.5b"; do
    read -r writer port model <<<"$spec"
    "$PY" -m trainer.evaluate.llm_writer write --data-dir "$DATA_DIR" --cache "$CACHE" \
      --conversations "$conversation" --writer "$writer" --url "http://127.0.0.1:$port/v1" --model "$model" ||
      status=1
  done
done
"$PY" -m trainer.evaluate.llm_writer sweep --data-dir "$DATA_DIR" --cache "$CACHE" --conversations "$CONVERSATIONS" \
  --writers memory-llm-1.5b,memory-llm-0.5b --out "$OUT" $([ "$status" = 0 ] || echo --partial)
exit $status
