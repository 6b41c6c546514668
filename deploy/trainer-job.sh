#!/usr/bin/env bash
# Runs the trainer on Kubernetes as a Job made from the suspended CronJob memalpha-trainer
# (deploy/base/trainer.yaml), with the arguments of one action:
#   deploy/trainer-job.sh [-n NAMESPACE] run [--set KEY=VALUE ...]     GRPO training run (GPU)
#   deploy/trainer-job.sh [-n NAMESPACE] eval [--adapter DIR ...]      held-out evaluation (GPU)
#   deploy/trainer-job.sh [-n NAMESPACE] publish --adapter DIR         load DIR into every vLLM pod, make it active
#   deploy/trainer-job.sh [-n NAMESPACE] rollback                      switch back to the previous policy
# publish/rollback need no GPU: their Job drops the GPU request. Follow a Job with
#   kubectl -n NAMESPACE logs -f job/<name printed below>
set -euo pipefail

NAMESPACE=memalpha
if [[ "${1:-}" == "-n" ]]; then NAMESPACE="$2"; shift 2; fi
ACTION="${1:?usage: $0 [-n NAMESPACE] run|eval|publish|rollback [ARGS...]}"
shift
K=(kubectl -n "$NAMESPACE")
SERVICE_URL="http://memalpha-api:8000"
# The write-once adapter store on the adapters volume: vLLM's filesystem resolver reads /adapters/<name>.
ADAPTERS_DIR=/adapters

case "$ACTION" in
  run | eval) ARGS=(train "$ACTION" --config /config/train.toml "$@") ;;
  publish)
    # One --vllm-url per vLLM pod: a runtime-loaded adapter lives in one server's memory.
    mapfile -t IPS < <("${K[@]}" get pods -l app.kubernetes.io/name=memalpha,app.kubernetes.io/component=vllm \
      --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}')
    [[ ${#IPS[@]} -gt 0 && -n "${IPS[0]}" ]] || { echo "no running vLLM pod in $NAMESPACE" >&2; exit 1; }
    ARGS=(train publish --service-url "$SERVICE_URL" --adapters-dir "$ADAPTERS_DIR")
    for ip in "${IPS[@]}"; do ARGS+=(--vllm-url "http://$ip:8000/v1"); done
    ARGS+=("$@") ;;
  rollback) ARGS=(train publish --rollback --service-url "$SERVICE_URL" "$@") ;;
  *) echo "unknown action $ACTION (run|eval|publish|rollback)" >&2; exit 2 ;;
esac

NAME="memalpha-$ACTION-$(date +%Y%m%d-%H%M%S)"
"${K[@]}" create job "$NAME" --from=cronjob/memalpha-trainer --dry-run=client -o json |
  python3 -c '
import json, sys
action, args = sys.argv[1], sys.argv[2:]
job = json.load(sys.stdin)
pod = job["spec"]["template"]["spec"]
container = pod["containers"][0]
container["args"] = args
if action in ("publish", "rollback"):  # HTTP calls only: no GPU node needed
    for section in ("requests", "limits"):
        container.get("resources", {}).get(section, {}).pop("nvidia.com/gpu", None)
    pod.pop("nodeSelector", None)
    pod.pop("tolerations", None)
json.dump(job, sys.stdout)
' "$ACTION" "${ARGS[@]}" |
  "${K[@]}" create -f -
echo "started job/$NAME: kubectl -n $NAMESPACE logs -f job/$NAME"
